//! PLACEHOLDER: replaced by the flat spec.
use crate::{Call, Config, FileInit, Oom, OpResult, TaskInit};

pub struct Spec;

impl Spec {
    pub fn new(_config: &Config, _files: &[FileInit], _tasks: &[TaskInit]) -> Spec {
        Spec
    }
    pub fn apply(&mut self, _call: &Call, _oom: Oom) -> OpResult {
        OpResult::Done
    }
}
