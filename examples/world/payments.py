"""payments: accounts, vendors and transfers, behind an API key.

    python examples/world/payments.py --port 0 --db var/world/payments.db --api-key-file var/world/payments.key

Every endpoint but /health needs `Authorization: Bearer <key>` (the one line of
--api-key-file). A transfer moves `amount` minor units from the operating
account in `currency` to the vendor's account; a reversal moves them back.
POSTs honour an `Idempotency-Key` header: the same key with the same body
replays the first result (same status and body, header Idempotent-Replayed:
true), with another body it is 422, while the first is still in flight 409.
Requests that fail input validation (400) are not recorded against the key.
A transfer keeps the Idempotency-Key it was made under: `GET /transfers?idempotency_key=K`
lists the transfers made under K (none: the request never happened, or is
still in flight: 409), so a compensation can find what a timed-out call did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
from pathlib import Path

import common as w

MAX_AMOUNT = 10**12
CURRENCY_RE = re.compile(r"[A-Z]{3}")
IDEMPOTENCY_KEY_RE = w.IDEMPOTENCY_KEY_RE

SCHEMA = [
    """CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('operating', 'vendor')),
        currency TEXT NOT NULL, balance INTEGER NOT NULL)""",
    """CREATE TABLE vendors (
        vendor_id TEXT PRIMARY KEY, name TEXT NOT NULL, iban TEXT NOT NULL, verified INTEGER NOT NULL,
        account_id TEXT NOT NULL UNIQUE REFERENCES accounts (account_id))""",
    """CREATE TABLE transfers (
        transfer_id TEXT PRIMARY KEY, vendor_id TEXT NOT NULL REFERENCES vendors (vendor_id),
        from_account TEXT NOT NULL REFERENCES accounts (account_id),
        to_account TEXT NOT NULL REFERENCES accounts (account_id),
        amount INTEGER NOT NULL CHECK (amount > 0), currency TEXT NOT NULL, reference TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('completed', 'reversed')),
        created_at TEXT NOT NULL, reversed_at TEXT)""",
    """CREATE TABLE ledger (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL REFERENCES accounts (account_id),
        transfer_id TEXT NOT NULL REFERENCES transfers (transfer_id),
        kind TEXT NOT NULL CHECK (kind IN ('transfer', 'reversal')),
        delta INTEGER NOT NULL, balance_after INTEGER NOT NULL, created_at TEXT NOT NULL)""",
    "CREATE INDEX ledger_by_account ON ledger (account_id, entry_id)",
    """CREATE TABLE idempotency (
        key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
        status INTEGER, response TEXT, created_at TEXT NOT NULL)""",
]

# Version 1 is SCHEMA; each migration takes the database one version up.
MIGRATIONS = [
    "ALTER TABLE transfers ADD COLUMN idempotency_key TEXT",  # the Idempotency-Key of the POST that made it
    "CREATE INDEX transfers_by_idempotency_key ON transfers (idempotency_key)",
]

# Operating accounts pay; each vendor has an account that receives.
OPERATING = [("ACC-OPS-EUR", "EUR", 1_000_000_000), ("ACC-OPS-USD", "USD", 250_000_000)]
VENDORS = [
    ("V-17", "Northwind Supplies", "DE89370400440532013000", "EUR"),
    ("V-42", "Contoso Cleaning", "FR1420041010050500013M02606", "EUR"),
    ("V-221", "Fabrikam Logistics", "NL91ABNA0417164300", "EUR"),
    ("V-305", "Globex Corporation", "GB29NWBK60161331926819", "USD"),
]


def seed(conn) -> None:
    for account_id, currency, balance in OPERATING:
        conn.execute("INSERT INTO accounts VALUES (?, 'operating', 'operating', ?, ?)", (account_id, currency, balance))
    for vendor_id, name, iban, currency in VENDORS:
        account_id = f"ACC-{vendor_id}"
        conn.execute("INSERT INTO accounts VALUES (?, ?, 'vendor', ?, 0)", (account_id, vendor_id, currency))
        conn.execute("INSERT INTO vendors VALUES (?, ?, ?, 1, ?)", (vendor_id, name, iban, account_id))


def transfer_view(row) -> dict:
    return {k: row[k] for k in ("transfer_id", "status", "amount", "currency", "reference", "from_account",
                                "to_account", "created_at", "reversed_at")} | {"vendor": row["vendor_id"]}


def vendor_view(row) -> dict:
    return {"vendor_id": row["vendor_id"], "name": row["name"], "iban": row["iban"],
            "verified": bool(row["verified"]), "account_id": row["account_id"], "currency": row["currency"]}


def account_view(row) -> dict:
    return {k: row[k] for k in ("account_id", "owner", "kind", "currency", "balance")}


def move(conn, account_id: str, delta: int, transfer_id: str, kind: str, at: str) -> None:
    balance = conn.execute("SELECT balance FROM accounts WHERE account_id = ?", (account_id,)).fetchone()[0] + delta
    conn.execute("UPDATE accounts SET balance = ? WHERE account_id = ?", (balance, account_id))
    conn.execute("INSERT INTO ledger (account_id, transfer_id, kind, delta, balance_after, created_at)"
                 " VALUES (?, ?, ?, ?, ?, ?)", (account_id, transfer_id, kind, delta, balance, at))


def build(args) -> w.App:
    key = read_key(Path(args.api_key_file))
    db = w.Database(args.db, SCHEMA, seed, MIGRATIONS)
    with db.write() as conn:
        # A claim left by a process that died before finishing: its work never
        # committed (the work and the result are one transaction), so free the key.
        conn.execute("DELETE FROM idempotency WHERE state = 'in_flight'")
    app = w.App("payments", db)

    def authorize(headers) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="payments"'}
        value = headers.get("Authorization")
        if value is None:
            raise w.HTTPError(401, "missing API key: send Authorization: Bearer <key>", challenge)
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise w.HTTPError(401, "Authorization must be: Bearer <key>", challenge)
        if not hmac.compare_digest(token.strip().encode("utf-8", "replace"), key):
            raise w.HTTPError(401, "invalid API key", challenge)

    app.authorize = authorize

    def idempotent(req: w.Request, work) -> w.Response:
        """Run work(conn) in a transaction, once per Idempotency-Key."""
        key = req.headers.get("Idempotency-Key")
        if key is None:
            with db.write() as conn:
                return work(conn)
        if not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise w.HTTPError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
        fingerprint = hashlib.sha256(f"{req.method} {req.path}\n{w.dumps(req.body)}".encode()).hexdigest()
        with db.write() as conn:
            row = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO idempotency (key, fingerprint, state, created_at) VALUES (?, ?, 'in_flight', ?)",
                             (key, fingerprint, w.now()))
            elif row["state"] == "in_flight":
                raise w.HTTPError(409, "a request with this Idempotency-Key is still in flight; retry later",
                                  code="idempotency_in_flight")
            elif row["fingerprint"] != fingerprint:
                raise w.HTTPError(422, "this Idempotency-Key was used with a different request",
                                  code="idempotency_key_reused")
            else:
                return w.Response(row["status"], json.loads(row["response"]), {"Idempotent-Replayed": "true"})
        try:
            with db.write() as conn:
                conn.execute("SAVEPOINT work")
                try:
                    resp = work(conn)
                except w.HTTPError as e:
                    if e.status >= 500:
                        raise
                    conn.execute("ROLLBACK TO work")
                    resp = w.Response(e.status, e.body)
                conn.execute("RELEASE work")
                conn.execute("UPDATE idempotency SET state = 'done', status = ?, response = ? WHERE key = ?",
                             (resp.status, w.dumps(resp.body), key))
                return resp
        except BaseException:
            with db.write() as conn:  # nothing was done: let the client retry with this key
                conn.execute("DELETE FROM idempotency WHERE key = ? AND state = 'in_flight'", (key,))
            raise

    @app.route("GET", "/health", public=True)
    def health(req):
        return {"ok": True}

    @app.route("GET", "/vendors")
    def list_vendors(req):
        with db.read() as conn:
            rows = conn.execute("SELECT v.*, a.currency FROM vendors v JOIN accounts a USING (account_id)"
                                " ORDER BY vendor_id").fetchall()
        return {"vendors": [vendor_view(r) for r in rows]}

    @app.route("GET", "/vendors/{vendor_id}")
    def get_vendor(req):
        vendor_id = w.want_id(req.params["vendor_id"], "vendor id")
        with db.read() as conn:
            row = conn.execute("SELECT v.*, a.currency FROM vendors v JOIN accounts a USING (account_id)"
                               " WHERE vendor_id = ?", (vendor_id,)).fetchone()
        if row is None:
            raise w.HTTPError(404, f"unknown vendor {vendor_id}")
        return vendor_view(row)

    @app.route("GET", "/accounts")
    def list_accounts(req):
        with db.read() as conn:
            rows = conn.execute("SELECT * FROM accounts ORDER BY account_id").fetchall()
        return {"accounts": [account_view(r) for r in rows]}

    @app.route("GET", "/accounts/{account_id}")
    def get_account(req):
        account_id = w.want_id(req.params["account_id"], "account id")
        with db.read() as conn:
            row = conn.execute("SELECT * FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            if row is None:
                raise w.HTTPError(404, f"unknown account {account_id}")
            entries = conn.execute("SELECT entry_id, transfer_id, kind, delta, balance_after, created_at FROM ledger"
                                   " WHERE account_id = ? ORDER BY entry_id DESC LIMIT 100", (account_id,)).fetchall()
        return account_view(row) | {"ledger": [dict(e) for e in reversed(entries)]}

    @app.route("POST", "/transfers", body="required")
    def create_transfer(req):
        body = req.body
        w.check_fields(body, required=("vendor", "amount", "currency"), optional=("reference",))
        vendor_id = w.want_id(body["vendor"], "vendor")
        amount = body["amount"]
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
            raise w.HTTPError(400, f"amount must be a positive integer of minor units (cents), at most {MAX_AMOUNT}")
        currency = body["currency"]
        if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
            raise w.HTTPError(400, "currency must be a three-letter ISO 4217 code such as EUR")
        reference = w.want_str(body.get("reference", ""), "reference", min_len=0, max_len=140)

        def work(conn):
            vendor = conn.execute("SELECT v.*, a.currency FROM vendors v JOIN accounts a USING (account_id)"
                                  " WHERE vendor_id = ?", (vendor_id,)).fetchone()
            if vendor is None:
                raise w.HTTPError(404, f"unknown vendor {vendor_id}")
            if vendor["currency"] != currency:
                raise w.HTTPError(422, f"vendor {vendor_id} is paid in {vendor['currency']}, not {currency}",
                                  code="currency_mismatch")
            payer = conn.execute("SELECT * FROM accounts WHERE kind = 'operating' AND currency = ?",
                                 (currency,)).fetchone()
            if payer is None or payer["balance"] < amount:
                raise w.HTTPError(422, f"insufficient funds in {currency}", code="insufficient_funds")
            transfer_id, at = w.new_id("tr"), w.now()
            conn.execute("INSERT INTO transfers (transfer_id, vendor_id, from_account, to_account, amount, currency,"
                         " reference, status, created_at, reversed_at, idempotency_key)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, 'completed', ?, NULL, ?)",
                         (transfer_id, vendor_id, payer["account_id"], vendor["account_id"], amount, currency,
                          reference, at, req.headers.get("Idempotency-Key")))
            move(conn, payer["account_id"], -amount, transfer_id, "transfer", at)
            move(conn, vendor["account_id"], amount, transfer_id, "transfer", at)
            row = conn.execute("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,)).fetchone()
            return w.Response(201, transfer_view(row))

        return idempotent(req, work)

    @app.route("GET", "/transfers")
    def find_transfers(req):
        """The transfers made under ?idempotency_key=K (oldest first), or the latest 100."""
        key = w.query_idempotency_key(req)
        if key is None:
            with db.read() as conn:
                rows = conn.execute("SELECT * FROM transfers ORDER BY created_at DESC, rowid DESC LIMIT 100").fetchall()
            return {"transfers": [transfer_view(r) for r in reversed(rows)]}
        with db.read() as conn:
            claim = conn.execute("SELECT state FROM idempotency WHERE key = ?", (key,)).fetchone()
            rows = conn.execute("SELECT * FROM transfers WHERE idempotency_key = ? ORDER BY created_at, rowid",
                                (key,)).fetchall()
        if claim is not None and claim["state"] == "in_flight":
            raise w.HTTPError(409, "a request with this Idempotency-Key is still in flight; ask again later",
                              code="idempotency_in_flight")
        return {"idempotency_key": key, "key_used": claim is not None, "transfers": [transfer_view(r) for r in rows]}

    @app.route("GET", "/transfers/{transfer_id}")
    def get_transfer(req):
        transfer_id = w.want_id(req.params["transfer_id"], "transfer id")
        with db.read() as conn:
            row = conn.execute("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,)).fetchone()
        if row is None:
            raise w.HTTPError(404, f"unknown transfer {transfer_id}")
        return transfer_view(row)

    @app.route("POST", "/transfers/{transfer_id}/reverse", body="optional")
    def reverse_transfer(req):
        w.check_fields(req.body)
        transfer_id = w.want_id(req.params["transfer_id"], "transfer id")

        def work(conn):
            row = conn.execute("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,)).fetchone()
            if row is None:
                raise w.HTTPError(404, f"unknown transfer {transfer_id}")
            if row["status"] == "reversed":
                raise w.HTTPError(409, f"transfer {transfer_id} was already reversed at {row['reversed_at']}",
                                  code="already_reversed")
            at = w.now()
            move(conn, row["to_account"], -row["amount"], transfer_id, "reversal", at)
            move(conn, row["from_account"], row["amount"], transfer_id, "reversal", at)
            conn.execute("UPDATE transfers SET status = 'reversed', reversed_at = ? WHERE transfer_id = ?",
                         (at, transfer_id))
            row = conn.execute("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,)).fetchone()
            return w.Response(200, transfer_view(row))

        return idempotent(req, work)

    return app


def read_key(path: Path) -> bytes:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the API key file {path}: {e}") from None
    if not key or any(c.isspace() for c in key) or not key.isprintable():
        raise ValueError(f"the API key file {path} must hold one line: the key")
    return key.encode("utf-8")


def add_args(parser) -> None:
    parser.add_argument("--api-key-file", required=True, help="file holding the API key clients must present")


if __name__ == "__main__":
    sys.exit(w.run("payments", build, add_args))
