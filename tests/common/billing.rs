//! A clinic's billing agent's policy document, shared by the mode and supervised-edit tests.

/// A clinic's billing agent. Refunds over 100 go to a billing lead; `card_token` is secret.
pub fn billing(modes: &str) -> String {
    format!(
        r#"
[policy]
name = "billing"
owner = "billing team"
purpose = "refund patients' overpayments"
scope = "the clinic's own invoices"
liability_owner = "practice manager"
review_cadence = "90d"
data_handling = "card tokens are never recorded"

[tools.lookup_invoice]
effect = "read"
args.id = {{ type = "integer", required = true, min = 1 }}
[tools.refund]
effect = "irreversible"
args.invoice = {{ type = "integer", required = true, min = 1 }}
args.amount = {{ type = "number", required = true, min = 0, max = 500 }}
args.card_token = {{ type = "string", redact = "secret" }}
[tools.note]
effect = "write"
args.text = {{ type = "string", required = true }}

[roles.clerk]
tools = ["lookup_invoice", "refund", "note"]
[roles.intern]
tools = ["lookup_invoice", "note"]

[escalation]
groups.leads = ["maria", "sam"]
defaults = {{ timeout = "1h", chain = [{{ group = "leads" }}] }}

[[escalation.rules]]
id = "refund-over-100"
reason = "Refunds over 100 need a billing lead."
tools = ["refund"]
when.amount = {{ path = "amount", over = 100 }}

{modes}
"#
    )
}
