//! The per-task graph of who downloads from whom. Edges run parent -> child and
//! never form a cycle: an edge is refused when the parent is reachable from the
//! child. The task's lock makes check-and-add atomic.

use std::collections::{HashMap, HashSet, VecDeque};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DagError {
    #[error("vertex {0} is not in the graph")]
    NoVertex(String),
    #[error("edge {parent} -> {child} would close a cycle")]
    Cycle { parent: String, child: String },
}

#[derive(Debug, Default)]
pub struct Dag {
    children: HashMap<String, HashSet<String>>,
    parents: HashMap<String, HashSet<String>>,
}

impl Dag {
    pub fn add_vertex(&mut self, id: &str) {
        self.children.entry(id.to_string()).or_default();
        self.parents.entry(id.to_string()).or_default();
    }

    pub fn contains(&self, id: &str) -> bool {
        self.children.contains_key(id)
    }

    /// Removes a vertex and every edge touching it.
    pub fn remove_vertex(&mut self, id: &str) {
        if let Some(kids) = self.children.remove(id) {
            for k in kids {
                if let Some(p) = self.parents.get_mut(&k) {
                    p.remove(id);
                }
            }
        }
        if let Some(ps) = self.parents.remove(id) {
            for p in ps {
                if let Some(c) = self.children.get_mut(&p) {
                    c.remove(id);
                }
            }
        }
    }

    /// Whether `parent -> child` may be added without a cycle.
    pub fn can_add_edge(&self, parent: &str, child: &str) -> bool {
        if parent == child || !self.contains(parent) || !self.contains(child) {
            return false;
        }
        if self.children.get(parent).is_some_and(|c| c.contains(child)) {
            return true;
        }
        !self.reachable(child, parent)
    }

    pub fn add_edge(&mut self, parent: &str, child: &str) -> Result<(), DagError> {
        for v in [parent, child] {
            if !self.contains(v) {
                return Err(DagError::NoVertex(v.to_string()));
            }
        }
        if !self.can_add_edge(parent, child) {
            return Err(DagError::Cycle {
                parent: parent.to_string(),
                child: child.to_string(),
            });
        }
        self.children
            .entry(parent.to_string())
            .or_default()
            .insert(child.to_string());
        self.parents
            .entry(child.to_string())
            .or_default()
            .insert(parent.to_string());
        Ok(())
    }

    /// Drops one edge, if present.
    pub fn remove_edge(&mut self, parent: &str, child: &str) -> bool {
        let had = self
            .children
            .get_mut(parent)
            .is_some_and(|c| c.remove(child));
        if let Some(p) = self.parents.get_mut(child) {
            p.remove(parent);
        }
        had
    }

    /// Drops every edge into `child` (before it is handed new parents).
    pub fn clear_parents(&mut self, child: &str) {
        if let Some(ps) = self.parents.get_mut(child) {
            for p in ps.drain() {
                if let Some(c) = self.children.get_mut(&p) {
                    c.remove(child);
                }
            }
        }
    }

    pub fn parents_of(&self, id: &str) -> impl Iterator<Item = &String> {
        self.parents.get(id).into_iter().flatten()
    }

    pub fn children_of(&self, id: &str) -> impl Iterator<Item = &String> {
        self.children.get(id).into_iter().flatten()
    }

    /// Whether `to` can be reached from `from` along edges.
    fn reachable(&self, from: &str, to: &str) -> bool {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([from]);
        while let Some(v) = queue.pop_front() {
            if v == to {
                return true;
            }
            if seen.insert(v) {
                queue.extend(self.children_of(v).map(String::as_str));
            }
        }
        false
    }

    /// True when no edge path returns to its start (used by tests).
    pub fn is_acyclic(&self) -> bool {
        // Kahn's algorithm: a DAG can be fully peeled by in-degree.
        let mut indeg: HashMap<&str, usize> = self
            .parents
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect();
        let mut queue: VecDeque<&str> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut peeled = 0;
        while let Some(v) = queue.pop_front() {
            peeled += 1;
            for c in self.children_of(v) {
                if let Some(d) = indeg.get_mut(c.as_str()) {
                    *d -= 1;
                    if *d == 0 {
                        queue.push_back(c);
                    }
                }
            }
        }
        peeled == self.children.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_cycles_and_self_loops() {
        let mut d = Dag::default();
        for v in ["a", "b", "c"] {
            d.add_vertex(v);
        }
        d.add_edge("a", "b").unwrap();
        d.add_edge("b", "c").unwrap();
        assert_eq!(
            d.add_edge("c", "a"),
            Err(DagError::Cycle {
                parent: "c".into(),
                child: "a".into()
            })
        );
        assert!(!d.can_add_edge("a", "a"));
        assert!(d.can_add_edge("a", "c"));
        assert!(matches!(d.add_edge("a", "x"), Err(DagError::NoVertex(_))));
        d.remove_vertex("b");
        assert!(d.can_add_edge("c", "a"), "the path through b is gone");
        assert!(d.is_acyclic());
    }
}
