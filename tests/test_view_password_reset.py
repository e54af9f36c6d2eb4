"""Password reset by e-mail: reachable without signing in, the same answer for an address
nobody has, a link that works once, and then the new password signs in."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.core import mail
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def vera(viewer):
    viewer.email = "vera@example.org"
    viewer.save(update_fields=["email"])
    return viewer


def reset_link(message: mail.EmailMessage) -> str:
    [link] = re.findall(r"https?://\S+", message.body)
    return link


def test_the_login_page_links_to_the_reset_page_which_needs_no_login(client, db):
    login = client.get(reverse("login"))
    assert reverse("password_reset") in login.content.decode()

    page = client.get(reverse("password_reset"))

    assert page.status_code == 200
    assert 'name="email"' in page.content.decode()


def test_a_reset_by_e_mail_sets_a_new_password_that_signs_in(client, vera):
    response = client.post(reverse("password_reset"), {"email": "VERA@example.org"})

    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")
    [message] = mail.outbox
    assert message.to == ["vera@example.org"]
    assert "vera" in message.body
    link = reset_link(message)
    assert link.startswith(settings.SITE_URL + "/password-reset/")

    # The link redirects to a URL without the token (Django hides it from referrers).
    form_page = client.get(link.removeprefix(settings.SITE_URL), follow=True)
    assert "new_password1" in form_page.content.decode()
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done.status_code == 302
    assert done["Location"] == reverse("password_reset_complete")
    vera.refresh_from_db()
    assert vera.check_password(NEW_PASSWORD)
    assert not vera.check_password("correct horse battery")

    signed_in = client.post(reverse("login"), {"username": "vera", "password": NEW_PASSWORD})
    assert signed_in.status_code == 302
    assert client.session["_auth_user_id"] == str(vera.pk)

    # Used once, the link is dead.
    client.logout()
    again = client.get(link.removeprefix(settings.SITE_URL), follow=True)
    assert "This link is not valid any more" in again.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client, vera):
    known = client.post(reverse("password_reset"), {"email": "vera@example.org"}, follow=True)
    mail.outbox.clear()

    unknown = client.post(reverse("password_reset"), {"email": "who@example.org"}, follow=True)

    assert unknown.redirect_chain == known.redirect_chain
    assert unknown.status_code == known.status_code == 200
    page = unknown.content.decode()
    assert "If an account has this address" in page
    # The same page but for per-request tokens (CSRF, CSP nonce).
    assert len(page) == len(known.content.decode())
    assert mail.outbox == []


def test_a_forged_link_changes_nothing(client, vera, engineer):
    client.post(reverse("password_reset"), {"email": "vera@example.org"})
    link = reset_link(mail.outbox[0]).removeprefix(settings.SITE_URL)
    # Vera's token on the engineer's account id.
    _, prefix, _uid, token, _ = link.split("/", 4)
    forged = f"/{prefix}/{urlsafe_base64_encode(force_bytes(engineer.pk))}/{token}/"
    page = client.get(forged, follow=True)
    assert "This link is not valid any more" in page.content.decode()
    client.post(
        page.redirect_chain[-1][0] if page.redirect_chain else forged,
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    engineer.refresh_from_db()
    assert engineer.check_password("correct horse battery")


def test_mismatched_new_passwords_are_refused_with_a_message(client, vera):
    client.post(reverse("password_reset"), {"email": "vera@example.org"})
    form_page = client.get(reset_link(mail.outbox[0]).removeprefix(settings.SITE_URL), follow=True)

    response = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD + "x"},
    )

    assert response.status_code == 200
    assert "didn’t match" in response.content.decode() or "didn't match" in (
        response.content.decode()
    )
    vera.refresh_from_db()
    assert vera.check_password("correct horse battery")


def test_the_pages_refuse_a_wrong_method(client, db):
    assert client.delete(reverse("password_reset")).status_code == 405
    assert client.put(reverse("password_reset_done")).status_code == 405
    assert client.put(reverse("password_reset_complete")).status_code == 405


def test_asking_for_a_reset_costs_one_query_for_the_accounts(
    client, vera, django_assert_num_queries
):
    # The active accounts with this address (case-insensitive); nothing else for no account.
    with django_assert_num_queries(1):
        response = client.post(reverse("password_reset"), {"email": "who@example.org"})
    assert response.status_code == 302
