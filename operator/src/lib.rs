//! The Darter operator's library: the scheduler (runnable without Kubernetes);
//! controllers and the manager arrive with their issues.

pub mod scheduler;
