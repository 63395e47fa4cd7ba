"""Streams: who may host, creating (slugs), starting and ending, and the reads.
Every refusal leaves the rows exactly as they were."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound
from livestream import selectors, services
from livestream.exceptions import InvalidStreamTransition, NotStreamHost, SlugTaken
from livestream.models import Stream
from tests.factories import UserFactory

Status = Stream.Status
MISSING_ID = 987_654


def _host(**kwargs):
    user = UserFactory(**kwargs)
    group, _ = Group.objects.get_or_create(name="hosts")
    user.groups.add(group)
    return user


def _stream(host=None, *, title: str = "Spring Glow Sale", **kwargs) -> Stream:
    return services.stream_create(host=host or _host(), title=title, **kwargs)


def _rows() -> list[tuple]:
    return list(
        Stream.objects.order_by("pk").values_list(
            "pk", "host_id", "title", "slug", "status", "started_at", "ended_at", "updated_at"
        )
    )


@pytest.fixture
def frozen_now(monkeypatch):
    """Stop the clock the services read at one whole second."""
    instant = timezone.now().replace(microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: instant)
    return instant


# --- who may host ----------------------------------------------------------------------


@pytest.mark.django_db
def test_user_can_host_is_staff_or_a_member_of_hosts():
    assert services.user_can_host(_host()) is True
    assert services.user_can_host(UserFactory(is_staff=True)) is True
    assert services.user_can_host(UserFactory()) is False
    assert services.user_can_host(AnonymousUser()) is False
    assert services.user_can_host(None) is False
    assert services.user_can_host(_host(is_active=False)) is False


@pytest.mark.django_db
def test_stream_check_control_lets_only_the_host_and_staff_through():
    host = _host()
    stream = _stream(host)

    services.stream_check_control(stream=stream, user=host)
    services.stream_check_control(stream=stream, user=UserFactory(is_staff=True))
    for outsider in [_host(), UserFactory(), AnonymousUser(), None]:
        with pytest.raises(NotStreamHost) as excinfo:
            services.stream_check_control(stream=stream, user=outsider)
        assert excinfo.value.code == "permission_denied"
        assert excinfo.value.http_status == 403


# --- create ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_host_creates_a_scheduled_stream_with_a_slug_from_the_title():
    host = _host()
    start = datetime(2030, 5, 1, 18, 30, tzinfo=UTC)

    stream = services.stream_create(
        host=host,
        title="  Spring Glow Sale!  ",
        scheduled_start=start,
        playback_url="https://video.example.com/live/abc",
        description="Serums at flash prices.",
    )

    stream.refresh_from_db()
    assert stream.host == host
    assert stream.title == "Spring Glow Sale!"
    assert stream.slug == "spring-glow-sale"
    assert stream.description == "Serums at flash prices."
    assert stream.status == Status.SCHEDULED
    assert stream.scheduled_start == start
    assert stream.started_at is None
    assert stream.ended_at is None
    assert stream.playback_url == "https://video.example.com/live/abc"
    assert list(host.hosted_streams.all()) == [stream]


@pytest.mark.django_db
def test_staff_may_create_a_stream():
    staff = UserFactory(is_staff=True)

    stream = services.stream_create(host=staff, title="Ops test")

    assert stream.host == staff
    assert stream.slug == "ops-test"


@pytest.mark.django_db
def test_a_taken_slug_gets_a_short_suffix(monkeypatch):
    host = _host()
    first = _stream(host)
    suffixes = iter(["k3x9"])
    monkeypatch.setattr(services, "_slug_suffix", lambda: next(suffixes))

    second = _stream(host)

    assert first.slug == "spring-glow-sale"
    assert second.slug == "spring-glow-sale-k3x9"


@pytest.mark.django_db
def test_a_taken_suffix_is_retried_with_another(monkeypatch):
    host = _host()
    _stream(host)
    _stream(host, slug="spring-glow-sale-aaaa")
    suffixes = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(services, "_slug_suffix", lambda: next(suffixes))

    stream = _stream(host)

    assert stream.slug == "spring-glow-sale-bbbb"


@pytest.mark.django_db
def test_a_real_suffix_is_four_lowercase_letters_or_digits():
    host = _host()
    _stream(host)

    slug = _stream(host).slug

    prefix, suffix = slug[: len("spring-glow-sale-")], slug[len("spring-glow-sale-") :]
    assert prefix == "spring-glow-sale-"
    assert len(suffix) == 4
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in suffix)


@pytest.mark.django_db
def test_a_title_with_nothing_to_slugify_gets_the_slug_stream():
    assert _stream(title="!!! ???").slug == "stream"


@pytest.mark.django_db
def test_a_long_title_gives_a_slug_that_fits_with_its_suffix(monkeypatch):
    host = _host()
    monkeypatch.setattr(services, "_slug_suffix", lambda: "zz99")
    first = _stream(host, title="a" * 200)

    second = _stream(host, title="a" * 200)

    assert first.slug == "a" * 95
    assert second.slug == "a" * 95 + "-zz99"
    assert len(second.slug) == 100


@pytest.mark.django_db
def test_an_explicit_slug_is_used_as_given():
    assert _stream(slug="glow-2030").slug == "glow-2030"


@pytest.mark.django_db
def test_an_explicit_slug_that_is_taken_is_refused_and_nothing_is_written():
    _stream(slug="glow")
    before = _rows()

    with pytest.raises(SlugTaken) as excinfo:
        _stream(title="Other", slug="glow")

    assert excinfo.value.data == {"slug": "glow"}
    assert _rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": None}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": ""}, "slug"),
        ({"slug": "a" * 101}, "slug"),
        ({"scheduled_start": datetime(2030, 5, 1, 18, 30)}, "scheduled_start"),
        ({"scheduled_start": "2030-05-01T18:30:00Z"}, "scheduled_start"),
        ({"playback_url": "not a url"}, "playback_url"),
        ({"playback_url": "ftp://video.example.com/x"}, "playback_url"),
        ({"description": None}, "description"),
        ({"expected_viewers": 0}, "expected_viewers"),
        ({"expected_viewers": "500"}, "expected_viewers"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(fields, field):
    host = _host()
    arguments = {"host": host, "title": "Spring Glow Sale", **fields}

    with pytest.raises(InvalidInput) as excinfo:
        services.stream_create(**arguments)

    assert excinfo.value.data == {"field": field}
    assert Stream.objects.count() == 0


@pytest.mark.django_db
def test_a_user_who_cannot_host_cannot_create_a_stream():
    with pytest.raises(NotStreamHost):
        services.stream_create(host=UserFactory(), title="Mine")

    assert Stream.objects.count() == 0


# --- start -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_host_starts_a_scheduled_stream(frozen_now):
    host = _host()
    stream = _stream(host)

    started = services.stream_start(stream_id=stream.pk, actor=host)

    stream.refresh_from_db()
    assert started.status == stream.status == Status.LIVE
    assert stream.started_at == frozen_now
    assert stream.ended_at is None


@pytest.mark.django_db
def test_starting_a_live_stream_again_changes_nothing(monkeypatch):
    host = _host()
    stream = _stream(host)
    services.stream_start(stream_id=stream.pk, actor=host)
    before = _rows()
    later = timezone.now().replace(year=2099)
    monkeypatch.setattr(timezone, "now", lambda: later)

    again = services.stream_start(stream_id=stream.pk, actor=host)

    assert again.status == Status.LIVE
    assert _rows() == before


@pytest.mark.django_db
def test_staff_may_start_anyones_stream():
    stream = _stream()

    services.stream_start(stream_id=stream.pk, actor=UserFactory(is_staff=True))

    stream.refresh_from_db()
    assert stream.status == Status.LIVE


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["another_host", "viewer", "anonymous"])
def test_only_the_host_or_staff_may_start_and_nothing_changes_otherwise(who):
    stream = _stream()
    before = _rows()
    actor = {"another_host": _host, "viewer": UserFactory, "anonymous": AnonymousUser}[who]()

    with pytest.raises(NotStreamHost):
        services.stream_start(stream_id=stream.pk, actor=actor)

    assert _rows() == before


@pytest.mark.django_db
def test_an_ended_stream_cannot_start_again():
    host = _host()
    stream = _stream(host)
    services.stream_end(stream_id=stream.pk, actor=host)
    before = _rows()

    with pytest.raises(InvalidStreamTransition) as excinfo:
        services.stream_start(stream_id=stream.pk, actor=host)

    assert excinfo.value.code == "invalid_transition"
    assert excinfo.value.http_status == 409
    assert excinfo.value.data == {"status": "ended"}
    assert _rows() == before


@pytest.mark.django_db
def test_starting_or_ending_a_missing_stream_is_not_found():
    host = _host()

    with pytest.raises(NotFound):
        services.stream_start(stream_id=MISSING_ID, actor=host)
    with pytest.raises(NotFound):
        services.stream_end(stream_id=MISSING_ID, actor=host)


# --- end -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_host_ends_a_live_stream(frozen_now):
    host = _host()
    stream = _stream(host)
    services.stream_start(stream_id=stream.pk, actor=host)

    ended = services.stream_end(stream_id=stream.pk, actor=host)

    stream.refresh_from_db()
    assert ended.status == stream.status == Status.ENDED
    assert stream.started_at == frozen_now
    assert stream.ended_at == frozen_now


@pytest.mark.django_db
def test_a_scheduled_stream_can_be_ended_without_going_live(frozen_now):
    host = _host()
    stream = _stream(host)

    services.stream_end(stream_id=stream.pk, actor=host)

    stream.refresh_from_db()
    assert stream.status == Status.ENDED
    assert stream.started_at is None
    assert stream.ended_at == frozen_now


@pytest.mark.django_db
def test_ending_an_ended_stream_again_changes_nothing(monkeypatch):
    host = _host()
    stream = _stream(host)
    services.stream_end(stream_id=stream.pk, actor=host)
    before = _rows()
    later = timezone.now().replace(year=2099)
    monkeypatch.setattr(timezone, "now", lambda: later)

    again = services.stream_end(stream_id=stream.pk, actor=host)

    assert again.status == Status.ENDED
    assert _rows() == before


@pytest.mark.django_db
def test_only_the_host_or_staff_may_end_and_nothing_changes_otherwise():
    host = _host()
    stream = _stream(host)
    services.stream_start(stream_id=stream.pk, actor=host)
    before = _rows()

    with pytest.raises(NotStreamHost):
        services.stream_end(stream_id=stream.pk, actor=UserFactory())
    assert _rows() == before

    services.stream_end(stream_id=stream.pk, actor=UserFactory(is_staff=True))
    stream.refresh_from_db()
    assert stream.status == Status.ENDED


# --- reads -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_stream_list_is_every_stream_newest_first_with_its_host(django_assert_num_queries):
    host = _host()
    first = _stream(host, title="First")
    second = _stream(host, title="Second")
    services.stream_end(stream_id=first.pk, actor=host)

    with django_assert_num_queries(1):
        rows = [(s.slug, s.host.username) for s in selectors.stream_list()]

    assert rows == [(second.slug, host.username), (first.slug, host.username)]


@pytest.mark.django_db
def test_stream_get_finds_by_slug_or_raises_not_found():
    stream = _stream()

    assert selectors.stream_get(slug="spring-glow-sale") == stream
    with pytest.raises(NotFound):
        selectors.stream_get(slug="no-such-stream")


@pytest.mark.django_db
def test_the_host_may_say_how_many_viewers_they_expect():
    stream = services.stream_create(host=_host(), title="Big one", expected_viewers=4000)

    assert Stream.objects.get(pk=stream.pk).expected_viewers == 4000
