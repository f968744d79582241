// A stdio MCP server whose one tool, `env`, answers with the names of the environment variables
// it was started with (and `PATH`'s value), for the gateway's downstream-environment test.
import { createInterface } from "node:readline";

const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");

createInterface({ input: process.stdin }).on("line", (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (msg.id === undefined) return;
  const reply = (result) => send({ jsonrpc: "2.0", id: msg.id, result });
  switch (msg.method) {
    case "initialize":
      return reply({
        protocolVersion: msg.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: "env", version: "1.0.0" },
      });
    case "tools/list":
      return reply({ tools: [{ name: "env", inputSchema: { type: "object", properties: {} } }] });
    case "tools/call":
      return reply({
        content: [{ type: "text", text: "env" }],
        structuredContent: { names: Object.keys(process.env).sort(), path: process.env.PATH ?? null },
      });
    default:
      return send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "method not found" } });
  }
});
