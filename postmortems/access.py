"""Who may read and write what. Roles are the Django groups below."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from .models import PostMortem

ENGINEER = "engineer"
MANAGER = "manager"
VIEWER = "viewer"
ROLES = (ENGINEER, MANAGER, VIEWER)

AnyUser = User | AnonymousUser


def _groups(user: AnyUser) -> set[str]:
    # Cached on the user object: a page asks several times per request.
    cached = getattr(user, "_fixproof_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
        setattr(user, "_fixproof_groups", cached)  # noqa: B010 (an attribute of our own)
    return cached


def has_role(user: AnyUser) -> bool:
    return user.is_superuser or bool(_groups(user) & set(ROLES))


def can_write(user: AnyUser) -> bool:
    return user.is_superuser or ENGINEER in _groups(user)


def is_manager(user: AnyUser) -> bool:
    return user.is_superuser or MANAGER in _groups(user)


def can_manage_actions(user: AnyUser) -> bool:
    """Status, owner and due date of actions: managers and the engineers who write."""
    return is_manager(user) or can_write(user)


def visible_postmortems(user: AnyUser) -> QuerySet[PostMortem]:
    qs = PostMortem.objects.all()
    if not isinstance(user, User) or not has_role(user):
        return qs.none()
    if is_manager(user):
        return qs
    # EXISTS rather than joins: no duplicate rows, no DISTINCT over wide rows.
    authored = PostMortem.authors.through.objects.filter(
        postmortem_id=OuterRef("pk"), user_id=user.pk
    )
    in_team = PostMortem.objects.filter(pk=OuterRef("pk"), team__members=user)
    return qs.filter(Q(is_private=False) | Q(created_by=user) | Exists(authored) | Exists(in_team))


def require_role(user: AnyUser) -> User:
    """The signed-in user, once they have a role (every page asks for one)."""
    if not isinstance(user, User) or not has_role(user):
        raise PermissionDenied(_("Your account has no role yet: ask an administrator for one."))
    return user


def require_write(user: AnyUser) -> User:
    """The signed-in user, once they may write (engineers)."""
    if not isinstance(user, User) or not can_write(user):
        raise PermissionDenied(_("Only engineers can write post-mortems."))
    return user


def get_visible_or_404(user: AnyUser, pk: int, queryset: QuerySet[PostMortem] | None = None):
    qs = queryset if queryset is not None else PostMortem.objects.all()
    visible = visible_postmortems(user)
    # A private post-mortem is a 404 to an outsider: its existence is not shown.
    try:
        return qs.filter(pk__in=visible.filter(pk=pk).values("pk")).get(pk=pk)
    except PostMortem.DoesNotExist:
        raise Http404("No such post-mortem.") from None
