"""mail: a fake outbox. Sent mail is stored, never delivered, never deleted.

    python examples/world/mail.py --port 0 --db var/world/mail.db

`POST /send {to, subject, body}` stores a message and returns its
`message_id`; `GET /outbox` lists what was sent, oldest first. There is no
delete: sending cannot be undone.
"""

from __future__ import annotations

import re
import sys

import common as w

ADDRESS_RE = re.compile(r"[^@\s<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")

SCHEMA = [
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, sent_at TEXT NOT NULL)""",
]


def view(row) -> dict:
    return {"message_id": row["message_id"], "to": row["recipient"], "subject": row["subject"],
            "body": row["body"], "sent_at": row["sent_at"]}


def build(args) -> w.App:
    db = w.Database(args.db, SCHEMA)
    app = w.App("mail", db)

    @app.route("GET", "/health", public=True)
    def health(req):
        return {"ok": True}

    @app.route("POST", "/send", body="required")
    def send(req):
        w.check_fields(req.body, required=("to", "subject", "body"))
        to = w.want_str(req.body["to"], "to", max_len=254)
        if not ADDRESS_RE.fullmatch(to):
            raise w.HTTPError(400, "to must be one e-mail address such as ap@example.com")
        subject = w.want_str(req.body["subject"], "subject", max_len=998)
        body = w.want_str(req.body["body"], "body", min_len=0, max_len=32768, single_line=False)
        message_id, at = w.new_id("msg"), w.now()
        with db.write() as conn:
            conn.execute("INSERT INTO messages (message_id, recipient, subject, body, sent_at) VALUES (?, ?, ?, ?, ?)",
                         (message_id, to, subject, body, at))
        return w.Response(201, {"message_id": message_id, "sent_at": at})

    @app.route("GET", "/outbox")
    def outbox(req):
        with db.read() as conn:
            rows = conn.execute("SELECT * FROM messages ORDER BY seq").fetchall()
        return {"messages": [view(r) for r in rows]}

    @app.route("GET", "/outbox/{message_id}")
    def get_message(req):
        message_id = w.want_id(req.params["message_id"], "message id")
        with db.read() as conn:
            row = conn.execute("SELECT * FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        if row is None:
            raise w.HTTPError(404, f"no message {message_id}")
        return view(row)

    return app


if __name__ == "__main__":
    sys.exit(w.run("mail", build))
