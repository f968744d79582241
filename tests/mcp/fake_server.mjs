// A tiny MCP server over stdio with no dependencies, for the gateway's fault tests and latency
// bench: `echo`, `pay` (echoes an amount), `crash` (exits the process), `hang` (never answers),
// `whoami` (echoes the credential the gateway put in the request's `_meta`, and its SHA-256),
// `grow` (adds the tool `extra` and sends `notifications/tools/list_changed`), `noise` (writes a
// line that is not JSON and an answer to an id nobody asked about before its own answer), `flood`
// (answers with a text of `bytes` characters; `id_last` writes the id after the result, as the
// TypeScript SDK's servers do).
import { createHash } from "node:crypto";
import { mcpHandler, send, serveStdio, text } from "./stdio_server.mjs";

const tools = [
  { name: "echo", inputSchema: { type: "object", properties: { message: { type: "string" } } } },
  { name: "pay", inputSchema: { type: "object", properties: { amount: { type: "number" } } } },
  { name: "crash", inputSchema: { type: "object", properties: {} } },
  { name: "hang", inputSchema: { type: "object", properties: {} } },
  { name: "whoami", inputSchema: { type: "object", properties: {} } },
  { name: "grow", inputSchema: { type: "object", properties: {} } },
  { name: "noise", inputSchema: { type: "object", properties: {} } },
  {
    name: "flood",
    inputSchema: {
      type: "object",
      properties: { bytes: { type: "number" }, id_last: { type: "boolean" } },
    },
  },
];

serveStdio(
  mcpHandler({
    name: "fake",
    tools,
    call: (msg, { args, reply, fail }) => {
      switch (msg.params.name) {
        case "echo":
          return reply(text(String(args.message ?? "")));
        case "pay":
          return reply(text(`paid ${args.amount}`));
        case "crash":
          process.exit(3);
        case "hang":
          return;
        case "grow":
          if (!tools.some((t) => t.name === "extra")) {
            tools.push({ name: "extra", inputSchema: { type: "object", properties: {} } });
          }
          reply(text("grown"));
          return send({ jsonrpc: "2.0", method: "notifications/tools/list_changed" });
        case "noise":
          process.stdout.write("this line is not JSON\n");
          send({ jsonrpc: "2.0", id: `${msg.id}-unknown`, result: text("not yours") });
          send({ jsonrpc: "2.0", id: "tollgate-999999", result: text("nobody's") });
          return reply(text("after the noise"));
        case "flood": {
          const result = text("x".repeat(Number(args.bytes ?? 0)));
          if (args.id_last) return send({ result, jsonrpc: "2.0", id: msg.id });
          return reply(result);
        }
        case "extra":
          if (tools.some((t) => t.name === "extra")) return reply(text("extra ran"));
          return fail(-32602, "unknown tool");
        case "whoami": {
          const cred = msg.params._meta?.["tollgate/credential"] ?? "none";
          const sha = createHash("sha256").update(cred).digest("hex");
          return reply(text(`credential=${cred} sha256=${sha}`));
        }
        default:
          return fail(-32602, "unknown tool");
      }
    },
  }),
);
