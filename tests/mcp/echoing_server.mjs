// A stdio MCP server that echoes the per-call credential the gateway puts in `_meta` back in the
// ways a careless server would: in a JSON-RPC error message (`leak_err`), percent-encoded in a
// result text (`leak_pct`), and percent-encoded in structured content, as a value and as a key
// (`leak_structured`). The gateway must cut every one of them out before its client sees it.
import { createInterface } from "node:readline";

const tools = ["leak_err", "leak_pct", "leak_structured"].map((name) => ({
  name,
  inputSchema: { type: "object", properties: {} },
}));

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
  const fail = (code, message) => send({ jsonrpc: "2.0", id: msg.id, error: { code, message } });
  switch (msg.method) {
    case "initialize":
      return reply({
        protocolVersion: msg.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: "echoing", version: "1.0.0" },
      });
    case "tools/list":
      return reply({ tools });
    case "tools/call": {
      const cred = msg.params._meta?.["tollgate/credential"] ?? "none";
      const pct = encodeURIComponent(cred);
      switch (msg.params.name) {
        case "leak_err":
          return fail(-32001, `invalid api key '${cred}'`);
        case "leak_pct":
          return reply({ content: [{ type: "text", text: `GET https://api.example/v1?key=${pct} -> 200` }] });
        case "leak_structured":
          return reply({
            content: [{ type: "text", text: "ok" }],
            structuredContent: { url: `https://api.example/v1?key=${pct}`, [pct]: "seen" },
          });
        default:
          return fail(-32602, "unknown tool");
      }
    }
    default:
      return fail(-32601, "method not found");
  }
});
