//! `activate`: the last step. The tenant becomes ACTIVE in the same
//! transaction that records this step's completion (see outbox::pipeline).

use async_trait::async_trait;

use super::Step;

pub struct Activate;

#[async_trait]
impl Step for Activate {
    fn name(&self) -> &'static str {
        "activate"
    }

    fn external_work(&self) -> bool {
        false
    }

    fn database_work(&self) -> bool {
        false
    }

    fn compensable(&self) -> bool {
        false
    }
}
