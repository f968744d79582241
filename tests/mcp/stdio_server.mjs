// What every test MCP server here shares: the MCP handshake (`initialize`, `ping`, `tools/list`)
// and the newline-delimited JSON-RPC loop over stdio. A server gives its name, its tools (an
// array it may change later) and what `tools/call` does; `mcpHandler` turns that into a
// function of one message, which `serveStdio` runs for every line (a server that also speaks
// HTTP calls the handler itself).
import { createInterface } from "node:readline";

/** Writes one JSON-RPC message as a line on stdout. */
export const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");

/** A tool result holding one text block. */
export const text = (t) => ({ content: [{ type: "text", text: t }] });

/**
 * The handler of one message: `answer(response)` sends a response (never called for a
 * notification, which goes to `notify`). `call(msg, { args, reply, fail })` runs a `tools/call`;
 * `reply(result)` and `fail(code, message)` answer it.
 */
export function mcpHandler({ name, tools, call, notify = () => {} }) {
  return (msg, answer) => {
    if (msg.id === undefined) return notify(msg);
    const reply = (result) => answer({ jsonrpc: "2.0", id: msg.id, result });
    const fail = (code, message) => answer({ jsonrpc: "2.0", id: msg.id, error: { code, message } });
    switch (msg.method) {
      case "initialize":
        return reply({
          protocolVersion: msg.params.protocolVersion,
          capabilities: { tools: {} },
          serverInfo: { name, version: "1.0.0" },
        });
      case "ping":
        return reply({});
      case "tools/list":
        return reply({ tools });
      case "tools/call":
        return call(msg, { args: msg.params.arguments ?? {}, reply, fail });
      default:
        return fail(-32601, "method not found");
    }
  };
}

/** Runs `handle(msg, send)` for every line of stdin that is JSON (other lines are ignored). */
export function serveStdio(handle) {
  createInterface({ input: process.stdin }).on("line", (line) => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    handle(msg, send);
  });
}
