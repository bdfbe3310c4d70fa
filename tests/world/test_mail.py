"""mail: a fake outbox; sending cannot be undone."""

from __future__ import annotations

import pytest

from tests.world.conftest import call


@pytest.fixture
def mail(spawn):
    return spawn("mail")


def test_sent_mail_is_listed_in_the_outbox_in_order(mail):
    a = call("POST", mail.url + "/send", {"to": "ap@example.com", "subject": "Invoice INV-1001", "body": "Paid.\n"})
    b = call("POST", mail.url + "/send", {"to": "cfo@example.com", "subject": "Report", "body": ""})
    assert a.status == b.status == 201
    assert a.body["message_id"] != b.body["message_id"]
    outbox = call("GET", mail.url + "/outbox")
    assert outbox.status == 200
    assert [(m["message_id"], m["to"], m["subject"], m["body"]) for m in outbox.body["messages"]] == [
        (a.body["message_id"], "ap@example.com", "Invoice INV-1001", "Paid.\n"),
        (b.body["message_id"], "cfo@example.com", "Report", ""),
    ]
    one = call("GET", f"{mail.url}/outbox/{a.body['message_id']}")
    assert one.body["subject"] == "Invoice INV-1001"
    assert call("GET", mail.url + "/outbox/msg_nope").status == 404


def test_sending_cannot_be_undone(mail):
    sent = call("POST", mail.url + "/send", {"to": "ap@example.com", "subject": "s", "body": "b"}).body
    reply = call("DELETE", f"{mail.url}/outbox/{sent['message_id']}")
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET"
    assert len(call("GET", mail.url + "/outbox").body["messages"]) == 1


@pytest.mark.parametrize("change, message", [
    ({"to": "not-an-address"}, "one e-mail address"),
    ({"to": "a@example.com, b@example.com"}, "one e-mail address"),
    ({"subject": "Hi\r\nBcc: all@example.com"}, "control characters"),
    ({"subject": ""}, "subject must be"),
    ({"body": 5}, "body must be a string"),
    ({"cc": "x@example.com"}, "unknown field(s): cc"),
])
def test_invalid_mail_is_400_and_not_sent(mail, change, message):
    reply = call("POST", mail.url + "/send", {"to": "ap@example.com", "subject": "s", "body": "b"} | change)
    assert reply.status == 400
    assert message in reply.body["error"]
    assert call("GET", mail.url + "/outbox").body["messages"] == []


def test_missing_fields_are_400(mail):
    reply = call("POST", mail.url + "/send", {"to": "ap@example.com"})
    assert reply.status == 400
    assert reply.body["error"] == "missing field(s): subject, body"
