from django.urls import path

from vms import grant_views, views

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("vms/<str:name>/", views.vm_detail, name="vm-detail"),
    path("vms/<str:name>/power/<str:action>/", views.vm_power, name="vm-power"),
    path("vms/<str:name>/clone/", views.vm_clone, name="vm-clone"),
    path("vms/<str:name>/delete/", views.vm_delete, name="vm-delete"),
    path("grants/", grant_views.grant_list, name="grant-list"),
    path("grants/add", grant_views.grant_add, name="grant-add"),
    path("grants/<int:grant_id>/remove", grant_views.grant_remove, name="grant-remove"),
]
