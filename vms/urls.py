from django.urls import path

from vms import views

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("vms/<str:name>/", views.vm_detail, name="vm-detail"),
]
