//! What every handler shares: the store (reads, and the admin's direct
//! writes), the loop's handle (every write to jobs, tasks and nodes), where
//! logs live, and the price book. Cheap to clone: each field is a handle.

use std::path::PathBuf;
use std::sync::Arc;

use suanli_billing::PriceBook;

use crate::control::Control;
use crate::services::Services;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub control: Control,
    /// Where task logs are kept: `DIR/logs/JOB/RUN/TASK.{out,err}`.
    pub data_dir: PathBuf,
    /// The price book invoices use, if configured.
    pub prices: Option<Arc<PriceBook>>,
    /// Model services: the router's view and the controller.
    pub services: Services,
}

impl axum::extract::FromRef<AppState> for Services {
    fn from_ref(st: &AppState) -> Services {
        st.services.clone()
    }
}
