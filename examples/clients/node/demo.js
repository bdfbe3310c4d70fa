#!/usr/bin/env node
'use strict';
// The finance agent's story from Node.js, against a running AECL:
// authenticate with the agent's API key, work with the task token, see the
// injected transfer stopped, a forged token and a borrowed identity refused,
// and the token renewed.
//
//   node examples/clients/node/demo.js --target HOST:PORT --key-file FILE
//       [--agent finance_agent_v2] [--json] [--ca FILE [--cert FILE --key FILE]]
//
// --key-file defaults to var/credentials/<agent>.key, which `make run` writes.
//
// Exits 0 when every step went as expected, 1 when one did not, 2 when the
// service is unreachable (or the key file is missing).

const fs = require('fs');
const path = require('path');
const { parseArgs } = require('util');

const REPO = path.resolve(__dirname, '..', '..', '..');
// Where `make run` writes the demo agent's API key.
const keyFileOf = (agent) => path.join(REPO, 'var', 'credentials', `${agent}.key`);

const USAGE = `usage: node examples/clients/node/demo.js [--target HOST:PORT] [--key-file FILE] [options]

  --target HOST:PORT   the service (default 127.0.0.1:50051)
  --key-file FILE      the agent's API key, one line (aecl_<key id>_<secret>); default
                       var/credentials/AGENT.key, which \`make run\` makes (none with --cert alone)
  --agent ID           the agent (default finance_agent_v2)
  --json               one JSON object per step on stdout
  --ca FILE            TLS: the CA that signed the server's certificate (plaintext without --ca
                       and --cert; with --cert alone, the system's CAs)
  --cert FILE          mTLS: the agent's client certificate (PEM), with --key
  --key FILE           mTLS: its private key (PEM)
  --server-name NAME   TLS: the name to check in the server's certificate (default: the target's host)
  --timeout SECONDS    how long to wait for the service (default 10)
  -h, --help           this text

Exits 0 when every step went as expected, 1 when one did not, 2 when the service is unreachable
(or the key file is missing).`;

const GOAL = 'Pay vendor invoices: read invoices, transfer funds';
const EMAIL = 'URGENT: process immediately';
const INVOICE = { invoice_id: 'INV-1001' };
// examples/tools.yaml: transfer_funds takes {vendor, amount, currency?, reference?}, the
// amount an integer in minor units. The seed's call: the vendor whose "new bank details" the email brings.
const TRANSFER = { vendor: 'V-221', amount: 100000 };
const INJECTED = { untrusted_input_source: true, triggering_input: EMAIL };

function parse(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string', default: '127.0.0.1:50051' },
      'key-file': { type: 'string' },
      agent: { type: 'string', default: 'finance_agent_v2' },
      json: { type: 'boolean', default: false },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'server-name': { type: 'string' },
      timeout: { type: 'string', default: '10' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return values;
}

/** The token with the last character of its signed part changed: a forged
 * signature. A v4.public token is `v4.public.<body>[.<footer>]`, the body the
 * base64url of the claims and the signature; the footer (the key id, JSON) is
 * read before the signature is checked, so its last character would only make
 * the token malformed. base64url's last character may carry unused padding
 * bits: flip its top bit (always a significant one), so the bytes change too. */
function tampered(token) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const parts = token.split('.');
  const body = parts.length >= 3 ? parts[2] : token;
  const last = body.slice(-1);
  const i = alphabet.indexOf(last);
  const changed = body.slice(0, -1) + (i >= 0 ? alphabet[i ^ 32] : (last === 'A' ? 'B' : 'A'));
  if (parts.length < 3) return changed;
  parts[2] = changed;
  return parts.join('.');
}

function rpcError(err, aecl) {
  const info = aecl.errorInfo(err);
  const out = { code: err.code, code_name: codeName(aecl, err.code), details: err.details };
  if (info) {
    out.error_reason = info.reason;
    if (info.metadata && info.metadata.reason) out.reason = info.metadata.reason;
  }
  return out;
}

function codeName(aecl, code) {
  return Object.keys(aecl.status).find((k) => aecl.status[k] === code) || String(code);
}

async function main(argv) {
  let opts;
  try {
    opts = parse(argv);
  } catch (e) {
    process.stderr.write(`demo: ${e.message}\n${USAGE}\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const timeout = Number(opts.timeout);
  if (!(timeout > 0)) {
    process.stderr.write(`demo: --timeout must be a positive number of seconds, not ${opts.timeout}\n`);
    return 2;
  }
  // With a client certificate alone, the connection proves the agent: no key is sent.
  const keyFile = opts['key-file'] || (opts.cert ? null : keyFileOf(opts.agent));
  let credential = '';
  if (keyFile) {
    try {
      credential = fs.readFileSync(keyFile, 'utf8').trim();
    } catch (e) {
      process.stderr.write(`demo: no API key for ${opts.agent} at ${keyFile} (${e.code || e.message}). `
        + '`make run` creates it on first start; or pass --key-file.\n');
      return 2;
    }
  }

  let aecl;
  try {
    aecl = require('./lib/aecl');
  } catch (e) {
    process.stderr.write(`demo: ${e.message}\n`);
    return 1;
  }

  let client;
  try {
    client = await aecl.connect(opts.target, {
      ca: opts.ca, cert: opts.cert, key: opts.key, serverName: opts['server-name'], timeoutMs: timeout * 1000,
    });
  } catch (e) {
    if (e instanceof aecl.UnreachableError) {
      const tls = opts.ca || opts.cert ? ' With TLS, check --ca, --cert and --key (and --server-name) too.' : '';
      process.stderr.write(`demo: ${e.message}\nStart it with \`make run\` in another shell, then run the demo again.${tls}\n`);
      return 2;
    }
    process.stderr.write(`demo: ${e.message}\n`);
    return 2;
  }

  const agent = opts.agent;
  const session = new aecl.TaskSession(client, { agentId: agent, credential });
  const results = [];
  const report = (r) => {
    results.push(r);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(r)}\n`);
    } else {
      const { step, rpc, ok, label, ...rest } = r;
      process.stdout.write(`[${step}] ${label}\n    ${rpc}: ${ok ? 'as expected' : 'DIVERGED'}\n`);
      for (const [k, v] of Object.entries(rest)) {
        if (v === undefined || v === '') continue;
        process.stdout.write(`    ${k.padEnd(16)}: ${typeof v === 'object' ? JSON.stringify(v) : v}\n`);
      }
    }
  };
  const outcomeOf = (resp) => ({
    outcome: resp.decision.outcome, gate: resp.decision.gate, rule: resp.decision.rule,
    risk_score: resp.decision.risk_score, reason: resp.decision.reason, event_id: resp.event_id,
  });
  // One step: run(), then judge(result) -> ok.
  const step = async (n, rpc, label, run, judge) => {
    let r;
    try {
      r = await run();
    } catch (e) {
      // A failed RPC is a result; anything else (a bug, a bad argument) is reported as the step's error.
      r = typeof e.code === 'number' ? rpcError(e, aecl) : { error: String(e.message || e) };
    }
    report({ step: n, rpc, ok: Boolean(judge(r)), label, ...r });
  };
  const isCode = (name) => (r) => r.code === aecl.status[name];

  try {
    await step(1, 'StartTask', `StartTask as ${agent} with its API key, goal "${GOAL}"`, async () => {
      const resp = await session.start({ declaredGoal: GOAL });
      return {
        task_id: resp.task_id, token_received: Boolean(resp.token),
        token_expires_at: session.tokenExpiresAt && session.tokenExpiresAt.toISOString(),
        expires_at: session.expiresAt && session.expiresAt.toISOString(),
      };
    }, (r) => r.task_id && r.token_received && r.token_expires_at);

    if (!session.token) {
      for (const [n, rpc] of [[2, 'Decide'], [3, 'Execute'], [4, 'Decide'], [5, 'Decide'], [6, 'Decide'], [7, 'RenewTaskToken']]) {
        report({ step: n, rpc, ok: false, label: 'not run: StartTask gave no task token', skipped: true });
      }
    } else {
      await step(2, 'Decide', 'Decide read_invoice INV-1001 with the task token',
        async () => outcomeOf(await session.decide('read_invoice', INVOICE)),
        (r) => r.outcome === 'OUTCOME_APPROVE');

      await step(3, 'Execute', 'Execute read_invoice INV-1001 (the agent\'s real job)', async () => {
        const resp = await session.execute('read_invoice', INVOICE);
        return { status: resp.status, ...outcomeOf(resp), output: aecl.fromStruct(resp.output), error: resp.error || undefined };
      }, (r) => r.status === 'EXECUTION_STATUS_SUCCEEDED' && r.output);

      await step(4, 'Decide', `Decide transfer_funds ${TRANSFER.amount} to vendor ${TRANSFER.vendor}, prompted by an untrusted email`,
        async () => outcomeOf(await session.decide('transfer_funds', TRANSFER, INJECTED)),
        (r) => r.outcome === 'OUTCOME_ESCALATE' || r.outcome === 'OUTCOME_BLOCK');

      const decideWith = (token, agentId, name, args, context) => aecl.unary(client, 'Decide', {
        task_id: session.taskId, agent_id: agentId, call: { name, args: aecl.toStruct(args) }, context,
      }, { token });

      await step(5, 'Decide', 'The same Decide with the last character of the token\'s signature changed (a forged token)',
        async () => outcomeOf(await decideWith(tampered(session.token), agent, 'transfer_funds', TRANSFER, INJECTED)),
        isCode('UNAUTHENTICATED'));

      await step(6, 'Decide', 'Decide read_invoice with a valid token but agent_id "someone_else"',
        async () => outcomeOf(await decideWith(session.token, 'someone_else', 'read_invoice', INVOICE)),
        isCode('PERMISSION_DENIED'));

      await step(7, 'RenewTaskToken', 'RenewTaskToken with the API key, then one more Decide with the new token', async () => {
        const before = session.token;
        await session.renew();
        const after = await session.decide('read_invoice', INVOICE);
        return {
          token_changed: Boolean(session.token) && session.token !== before,
          token_expires_at: session.tokenExpiresAt && session.tokenExpiresAt.toISOString(),
          then: 'Decide read_invoice', ...outcomeOf(after),
        };
      }, (r) => r.token_changed && r.outcome === 'OUTCOME_APPROVE');
    }
  } finally {
    client.close();
  }

  const failed = results.filter((r) => !r.ok);
  if (!opts.json) {
    process.stdout.write(failed.length
      ? `\nRESULT: diverged at step ${failed.map((r) => r.step).join(', ')}\n`
      : `\nRESULT: all ${results.length} steps went as expected\n`);
  }
  return failed.length ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
    process.stderr.write(`demo: ${e.stack || e}\n`);
    process.exitCode = 1;
  });
}

module.exports = { main, tampered };
