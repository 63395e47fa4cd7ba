from django.urls import path

from livestream import apis

urlpatterns = [
    path("streams/", apis.StreamListCreateApi.as_view(), name="stream-list"),
    path("streams/<slug:slug>/", apis.StreamDetailApi.as_view(), name="stream-detail"),
    path("streams/<slug:slug>/start/", apis.StreamStartApi.as_view(), name="stream-start"),
    path("streams/<slug:slug>/end/", apis.StreamEndApi.as_view(), name="stream-end"),
    path("streams/<slug:slug>/drops/", apis.DropCreateApi.as_view(), name="drop-create"),
    path("drops/<id:drop_id>/pin/", apis.DropPinApi.as_view(), name="drop-pin"),
    path("drops/<id:drop_id>/unpin/", apis.DropUnpinApi.as_view(), name="drop-unpin"),
    path(
        "drops/<id:drop_id>/reservations/",
        apis.DropReserveApi.as_view(),
        name="drop-reserve",
    ),
    path("drops/<id:drop_id>/waitlist/", apis.DropWaitlistApi.as_view(), name="drop-waitlist"),
    path("reservations/", apis.ReservationListApi.as_view(), name="reservation-list"),
    path(
        "reservations/<id:reservation_id>/",
        apis.ReservationDetailApi.as_view(),
        name="reservation-detail",
    ),
]
