//! Property: no call to a tool outside the role's allowlist is ever allowed, whatever the policy
//! and whatever name the agent makes up.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::{RunContext, ToolCall};

fn tool_name() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,6}"
}

/// Names an attacker might try: exact, near-miss, confusable, random.
fn probe(known: Vec<String>) -> impl Strategy<Value = String> {
    let k = known.clone();
    prop_oneof![
        prop::sample::select(known.clone()),
        prop::sample::select(k).prop_flat_map(|n| {
            let len = n.chars().count();
            (Just(n), 0..len.max(1), 0usize..8).prop_map(|(n, i, m)| mutate(&n, i, m))
        }),
        ".{0,12}",
    ]
}

fn mutate(name: &str, i: usize, how: usize) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    let i = i.min(chars.len().saturating_sub(1));
    match how {
        0 => chars[i] = chars[i].to_ascii_uppercase(),
        1 => chars.push(' '),
        2 => chars.insert(0, ' '),
        3 => {
            // Latin to Cyrillic look-alikes
            chars[i] = match chars[i] {
                'a' => 'а',
                'e' => 'е',
                'o' => 'о',
                'p' => 'р',
                'c' => 'с',
                'x' => 'х',
                other => other,
            }
        }
        4 => chars.push('\u{200b}'),
        5 => {
            chars.remove(i);
        }
        6 => chars.push('_'),
        _ => chars.push('\0'),
    }
    chars.into_iter().collect()
}

fn scenario() -> impl Strategy<Value = (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>)> {
    prop::collection::btree_set(tool_name(), 1..20).prop_flat_map(|tools| {
        let list: Vec<String> = tools.iter().cloned().collect();
        let roles = prop::collection::btree_map(
            "[a-d]",
            prop::collection::btree_set(prop::sample::select(list), 0..5),
            1..4,
        );
        (Just(tools), roles)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_call_outside_the_allowlist_is_ever_allowed(
        (tools, roles) in scenario(),
        seed in prop::collection::vec(any::<prop::sample::Index>(), 40),
        role_pick in any::<prop::sample::Index>(),
        extra in prop::collection::vec(".{0,12}", 10),
    ) {
        // Case-insensitive duplicates are refused at compile time; keep one of each.
        let mut seen = BTreeSet::new();
        let tools: BTreeSet<String> = tools.into_iter().filter(|t| seen.insert(t.to_ascii_lowercase())).collect();
        let mut builder = ActionBoundary::builder();
        for t in &tools {
            builder = builder.tool(t.clone(), ToolSpec::read());
        }
        for (r, allowed) in &roles {
            let allowed: Vec<&String> = allowed.iter().filter(|t| tools.contains(*t)).collect();
            builder = builder.role(r.clone(), RoleSpec::new().tools(allowed));
        }
        let b = builder.build().unwrap();
        let role_names: Vec<&String> = roles.keys().collect();
        let role = role_names[role_pick.index(role_names.len())];
        let allowlist: BTreeSet<&String> = roles[role].iter().filter(|t| tools.contains(*t)).collect();
        let ctx = RunContext::new("agent", role.as_str());

        let known: Vec<String> = tools.iter().cloned().collect();
        let mut names: Vec<String> = seed.iter().map(|ix| known[ix.index(known.len())].clone()).collect();
        for (k, ix) in known.iter().zip(seed.iter()) {
            for how in 0..8 {
                names.push(mutate(k, ix.index(k.len().max(1)), how));
            }
        }
        names.extend(extra);
        for name in &names {
            let allowed = b.check(&ctx, &ToolCall::new(name, "{}")).is_ok();
            prop_assert_eq!(allowed, allowlist.contains(name), "tool {:?} role {}", name, role);
        }
        let visible: BTreeSet<String> = b.visible_tools(role).map(|t| t.name().to_owned()).collect();
        let expected: BTreeSet<String> = allowlist.iter().map(|s| (*s).clone()).collect();
        prop_assert_eq!(visible, expected);
    }

    #[test]
    fn random_probe_names_are_never_allowed_unless_listed(name in probe(vec!["send_email".into(), "read".into()])) {
        let b = ActionBoundary::builder()
            .tool("send_email", ToolSpec::irreversible())
            .tool("read", ToolSpec::read())
            .tool("delete", ToolSpec::irreversible())
            .role("r", RoleSpec::new().tools(["send_email", "read"]))
            .build()
            .unwrap();
        let ok = b.check(&RunContext::new("a", "r"), &ToolCall::new(&name, "{}")).is_ok();
        prop_assert_eq!(ok, name == "send_email" || name == "read");
    }
}
