from django.urls import path

from vms import views

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("vms/<str:name>/", views.vm_detail, name="vm-detail"),
    path("vms/<str:name>/power/<str:action>/", views.vm_power, name="vm-power"),
    path("vms/<str:name>/clone/", views.vm_clone, name="vm-clone"),
    path("vms/<str:name>/delete/", views.vm_delete, name="vm-delete"),
]
