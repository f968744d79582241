//! Bench group `escalation`. (Under construction.)
use criterion::{Criterion, criterion_group, criterion_main};

fn escalation(_c: &mut Criterion) {}

criterion_group!(benches, escalation);
criterion_main!(benches);
