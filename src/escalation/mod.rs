//! The escalation gate: rules that route a call to a human, and the approval workflow that
//! decides it. (Under construction.)
