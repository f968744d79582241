//! Budget leases on PostgreSQL.
