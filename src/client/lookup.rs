//! A job as people name it: its whole id, or a unique start or end of one (the web shows an
//! id's last 8 characters). `cm jobs show`, the job page and `/api/jobs/ID` read it here alike.

use crate::store::{JobRow, Store, StoreError};

/// The most ids an ambiguous part lists.
pub const SHOWN: usize = 10;

/// What a name came to.
#[derive(Debug)]
pub enum Found {
    Job(Box<JobRow>),
    /// No job has that id, or an id that begins or ends with it.
    Nothing,
    /// Several ids begin or end with it: up to [`SHOWN`] of them, and whether there are more.
    Several {
        ids: Vec<String>,
        more: bool,
    },
}

/// The job `given` names, with why it waits if it does.
pub async fn find(store: &Store, given: &str) -> Result<Found, StoreError> {
    if let Some(job) = store.get(given).await? {
        return explained(store, job).await;
    }
    let mut ids = match given.trim() {
        "" => Vec::new(),
        part => store.ids_around(part, SHOWN as i64 + 1).await?,
    };
    match ids.len() {
        0 => Ok(Found::Nothing),
        // Gone between the two reads (db_reset) is gone.
        1 => match store.get(&ids[0]).await? {
            Some(job) => explained(store, job).await,
            None => Ok(Found::Nothing),
        },
        n => {
            ids.truncate(SHOWN);
            Ok(Found::Several {
                ids,
                more: n > SHOWN,
            })
        }
    }
}

async fn explained(store: &Store, mut job: JobRow) -> Result<Found, StoreError> {
    store.explain_waits(std::slice::from_mut(&mut job)).await?;
    Ok(Found::Job(Box::new(job)))
}

impl Found {
    /// Why `given` names no one job, in one line; `None` when it does.
    pub fn refusal(&self, given: &str) -> Option<String> {
        match self {
            Found::Job(_) => None,
            Found::Nothing => Some(format!(
                "no job {given:?} in the status store (`cm jobs` lists them)"
            )),
            Found::Several { ids, more } => Some(format!(
                "{given:?} begins or ends more than one job id: {}{}; give more of it",
                ids.join(", "),
                if *more { ", ..." } else { "" }
            )),
        }
    }
}
