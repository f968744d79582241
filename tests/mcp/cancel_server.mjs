// A tiny MCP server with no dependencies for the gateway's cancellation tests, over stdio (the
// default) or, with `--http`, over streamable HTTP (JSON answers, no session; it prints
// `PORT <n>` on stdout once listening on 127.0.0.1). Tools: `quick` (answers at once) and `slow`
// (answers after `ms` milliseconds, unless cancelled first; `late: true` answers anyway). It
// appends one JSON line to $CANCEL_LOG for every `tools/call` it receives
// (`{"event":"call","tool","id"}`) and every `notifications/cancelled`
// (`{"event":"cancelled","requestId","reason"}`), so a test sees which ids the gateway used and
// which it cancelled.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { mcpHandler, serveStdio, text } from "./stdio_server.mjs";

const tools = [
  { name: "quick", inputSchema: { type: "object", properties: {} } },
  {
    name: "slow",
    inputSchema: { type: "object", properties: { ms: { type: "number" }, late: { type: "boolean" } } },
  },
];
const log = (entry) => appendFileSync(process.env.CANCEL_LOG, JSON.stringify(entry) + "\n");
// Pending `slow` calls by their id's JSON text: cancelling one clears its timer.
const pending = new Map();

// Handles one message; `answer(msg)` sends a response (never called for a notification).
const handle = mcpHandler({
  name: "cancel",
  tools,
  notify: (msg) => {
    if (msg.method !== "notifications/cancelled") return;
    const { requestId, reason } = msg.params ?? {};
    log({ event: "cancelled", requestId, reason });
    const p = pending.get(JSON.stringify(requestId));
    if (p && !p.late) {
      clearTimeout(p.timer);
      pending.delete(JSON.stringify(requestId));
    }
  },
  call: (msg, { args, reply, fail }) => {
    log({ event: "call", tool: msg.params.name, id: msg.id });
    if (msg.params.name === "quick") return reply(text("quick done"));
    if (msg.params.name === "slow") {
      const key = JSON.stringify(msg.id);
      const timer = setTimeout(() => {
        pending.delete(key);
        reply(text(`slept ${args.ms}`));
      }, Number(args.ms ?? 0));
      pending.set(key, { timer, late: args.late === true });
      return;
    }
    return fail(-32602, "unknown tool");
  },
});

if (process.argv.includes("--http")) {
  const server = createServer((req, res) => {
    if (req.method !== "POST") {
      res.writeHead(405).end();
      return;
    }
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      let msg;
      try {
        msg = JSON.parse(body);
      } catch {
        res.writeHead(400).end();
        return;
      }
      if (msg.id === undefined) {
        handle(msg, () => {});
        res.writeHead(202).end();
        return;
      }
      handle(msg, (out) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(out));
      });
    });
  });
  server.listen(0, "127.0.0.1", () => {
    process.stdout.write(`PORT ${server.address().port}\n`);
  });
} else {
  serveStdio(handle);
}
