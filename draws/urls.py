from django.urls import path

from draws import apis

urlpatterns = [
    path("drops/<id:drop_id>/entries/", apis.DrawEntriesApi.as_view(), name="drop-entries"),
    path(
        "drops/<id:drop_id>/entries/mine/",
        apis.DrawEntryMineApi.as_view(),
        name="drop-entry-mine",
    ),
    path("drops/<id:drop_id>/draw/", apis.DrawApi.as_view(), name="drop-draw"),
    path(
        "drops/<id:drop_id>/entry-rules/",
        apis.DrawEntryRulesApi.as_view(),
        name="drop-entry-rules",
    ),
]
