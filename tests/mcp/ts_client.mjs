// Drives `tollgate mcp` with the official TypeScript SDK client: lists the tools, calls the
// allowed one and a hidden one, prints one JSON line with what it saw.
// Usage: node ts_client.mjs TOLLGATE_BINARY POLICY_FILE
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [bin, policy] = process.argv.slice(2);
const transport = new StdioClientTransport({ command: bin, args: ["mcp", "--no-audit", "--policy", policy] });
const client = new Client({ name: "tollgate-ts-test", version: "1.0.0" });
await client.connect(transport);
const server = client.getServerVersion();
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const echo = await client.callTool({ name: "echo", arguments: { message: "from typescript" } });
const hidden = await client.callTool({ name: "get-env", arguments: {} });
console.log(JSON.stringify({ server, tools, echo, hidden }));
await client.close();
