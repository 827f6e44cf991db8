//! The Darter operator's library: the scheduler and its standalone mode (no
//! Kubernetes);
//! controllers and the manager arrive with their issues.

pub mod agents;
pub mod k8s;
pub mod scheduler;
pub mod standalone;
