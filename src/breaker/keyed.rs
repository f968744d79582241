//! Breakers per tool, per agent or per agent x tool, created on first use, bounded in number.
//!
//! Lookups on the check path are lock-free (an `ArcSwap` snapshot of the map); inserting a new
//! key copies the map under a writer lock, which happens once per key. Only keys that have had a
//! permitted call are ever inserted, so an attacker inventing tool names cannot grow the map.
//! When the map is full, the breaker for a new key replaces a closed one; if every breaker is
//! open, half-open or forced open, no new key is admitted (fail closed).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::{BreakerConfig, CircuitBreaker, ConfigError, State};
use crate::boundary::hash::hash_name;
use crate::clock::Clock;

/// What one breaker covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerKey {
    /// One breaker per tool, shared by every agent.
    #[default]
    Tool,
    /// One breaker per agent, over all its tools.
    Agent,
    /// One breaker per agent and tool.
    AgentTool,
}

/// One keyed breaker.
#[derive(Debug)]
pub struct Keyed {
    agent: Box<str>,
    tool: Box<str>,
    /// The breaker.
    pub breaker: CircuitBreaker,
}

impl Keyed {
    /// The agent part of the key (empty for [`BreakerKey::Tool`]).
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The tool part of the key (empty for [`BreakerKey::Agent`]).
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Gives `ticket` back unused (the call never ran), so a half-open probe slot is freed.
    pub(crate) fn give_back(&self, ticket: super::Ticket) {
        let _ = self.breaker.record(
            ticket,
            super::CallResult::Ignored,
            std::time::Duration::ZERO,
        );
    }
}

type Map = HashMap<u64, Vec<Arc<Keyed>>>;

/// A bounded set of breakers, one per key.
pub struct KeyedBreakers {
    cfg: BreakerConfig,
    key: BreakerKey,
    capacity: usize,
    clock: Arc<dyn Clock>,
    map: ArcSwap<Map>,
    writer: Mutex<()>,
    /// Breakers evicted so far: a guard's run keeps the breakers it found until this moves.
    /// Incremented after the map without the evicted breaker is published, so whoever reads
    /// it before a lookup either finds the new map or sees the eviction counted.
    evictions: AtomicU64,
}

impl std::fmt::Debug for KeyedBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("key", &self.key)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl KeyedBreakers {
    /// Breakers configured by `cfg`, keyed by `key`, at most `capacity` of them.
    pub fn new(
        cfg: BreakerConfig,
        key: BreakerKey,
        capacity: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        Self::validate(&cfg, capacity)?;
        Ok(Self {
            cfg,
            key,
            capacity,
            clock,
            map: ArcSwap::from_pointee(Map::new()),
            writer: Mutex::new(()),
            evictions: AtomicU64::new(0),
        })
    }

    /// Checks a configuration without building anything.
    pub(crate) fn validate(cfg: &BreakerConfig, capacity: usize) -> Result<(), ConfigError> {
        cfg.validate()?;
        if capacity == 0 {
            return Err(ConfigError {
                field: "capacity",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    fn parts<'k>(&self, agent: &'k str, tool: &'k str) -> (&'k str, &'k str) {
        match self.key {
            BreakerKey::Tool => ("", tool),
            BreakerKey::Agent => (agent, ""),
            BreakerKey::AgentTool => (agent, tool),
        }
    }

    fn hash(agent: &str, tool: &str) -> u64 {
        hash_name(agent.as_bytes()).rotate_left(31) ^ hash_name(tool.as_bytes())
    }

    /// The breaker for this call's key, if one exists. Lock-free, allocation-free.
    pub fn get(&self, agent: &str, tool: &str) -> Option<Arc<Keyed>> {
        let (a, t) = self.parts(agent, tool);
        let map = self.map.load();
        map.get(&Self::hash(a, t))?
            .iter()
            .find(|k| &*k.agent == a && &*k.tool == t)
            .cloned()
    }

    /// The breaker for this call's key, created if needed; `None` when the set is full of
    /// breakers that are not closed.
    pub fn get_or_insert(&self, agent: &str, tool: &str) -> Option<Arc<Keyed>> {
        if let Some(k) = self.get(agent, tool) {
            return Some(k);
        }
        let (a, t) = self.parts(agent, tool);
        let _w = self.writer.lock();
        if let Some(k) = self.get(agent, tool) {
            return Some(k);
        }
        let mut map: Map = (**self.map.load()).clone();
        let evicted = self.len_of(&map) >= self.capacity;
        if evicted {
            // Replace a closed breaker (it holds no verdict worth keeping).
            let victim = map.iter().find_map(|(h, v)| {
                v.iter()
                    .position(|k| k.breaker.state() == State::Closed)
                    .map(|i| (*h, i))
            })?;
            let bucket = map.get_mut(&victim.0)?;
            bucket.remove(victim.1);
            if bucket.is_empty() {
                map.remove(&victim.0);
            }
        }
        let breaker = CircuitBreaker::new(self.cfg.clone(), Arc::clone(&self.clock)).ok()?;
        let keyed = Arc::new(Keyed {
            agent: a.into(),
            tool: t.into(),
            breaker,
        });
        map.entry(Self::hash(a, t))
            .or_default()
            .push(Arc::clone(&keyed));
        self.map.store(Arc::new(map));
        if evicted {
            self.evictions.fetch_add(1, Ordering::AcqRel);
        }
        Some(keyed)
    }

    /// How many breakers were evicted so far (to tell whether a breaker found earlier is still
    /// the one of its key).
    #[inline]
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Acquire)
    }

    fn len_of(&self, map: &Map) -> usize {
        map.values().map(Vec::len).sum()
    }

    /// Number of breakers held.
    pub fn len(&self) -> usize {
        self.len_of(&self.map.load())
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every breaker held (for dashboards and manual overrides).
    pub fn all(&self) -> Vec<Arc<Keyed>> {
        self.map.load().values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::CallResult;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            minimum_calls: 1,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn keys_follow_the_configured_scope() {
        let clock = Arc::new(ManualClock::new());
        let per_tool = KeyedBreakers::new(cfg(), BreakerKey::Tool, 10, clock.clone()).unwrap();
        let a = per_tool.get_or_insert("a1", "search").unwrap();
        let b = per_tool.get_or_insert("a2", "search").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let per_pair = KeyedBreakers::new(cfg(), BreakerKey::AgentTool, 10, clock).unwrap();
        let a = per_pair.get_or_insert("a1", "search").unwrap();
        let b = per_pair.get_or_insert("a2", "search").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(per_pair.len(), 2);
        assert!(per_pair.get("a3", "search").is_none());
    }

    #[test]
    fn capacity_is_bounded_and_open_breakers_are_never_evicted() {
        let clock = Arc::new(ManualClock::new());
        let kb = KeyedBreakers::new(cfg(), BreakerKey::Agent, 3, clock).unwrap();
        for i in 0..3 {
            let k = kb.get_or_insert(&format!("agent{i}"), "t").unwrap();
            let t = k.breaker.try_acquire().unwrap();
            let _ = k
                .breaker
                .record(t, CallResult::Failure, Duration::from_millis(1));
            assert_eq!(k.breaker.state(), State::Open);
        }
        // full of open breakers: a new key is refused, the open ones stay
        assert!(kb.get_or_insert("agent9", "t").is_none());
        assert_eq!(kb.len(), 3);
        kb.get("agent0", "t").unwrap().breaker.reset();
        // now a closed one can make room
        assert!(kb.get_or_insert("agent9", "t").is_some());
        assert_eq!(kb.len(), 3);
        assert!(kb.get("agent0", "t").is_none());
        for i in 0..1000 {
            let _ = kb.get_or_insert(&format!("x{i}"), "t");
        }
        assert!(kb.len() <= 3);
    }
}
