//! Find-or-create of a provider's customer (a Xero contact, a Shopify
//! customer, a QuickBooks customer), written once:
//!
//! - [`find_or_create`]: look the customer up by our key, create them when
//!   missing, and when the create is refused because another sync (or
//!   process) created them since, adopt the winner's record.
//! - [`CustomerLookups`]: one find-or-create at a time per connection and
//!   customer, within one process.
//!
//! When a new customer's invoices sync together (a backfill, a host that
//! records several jobs at once) every sync would otherwise look the
//! customer up, miss, and try to create them: one create wins, the others
//! are refused as duplicates and look the winner up again. That is correct
//! but costs calls the provider's limits count. Here the first sync does
//! the work and the syncs that asked meanwhile take its answer.
//!
//! This only saves calls; it must not be what keeps a customer single.
//! Other worker processes still race, and the adapters still adopt the
//! winner's record when a create is refused as a duplicate. Answers are
//! shared only with the syncs that were waiting for them, never cached.
//! A sync that takes a shared answer tells its job's call budget it was
//! spared a call, so it does not set aside a call it will not make.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use ledgerflow_workflows::call_budget;
use ledgerflow_workflows::provider::ProviderError;

/// Finds the customer (`find`), else creates them (`create`). A create
/// refused as a duplicate (`is_race`: another sync created them between
/// our lookup and our create) is answered by `adopt`, which looks the
/// winner up; when it finds nothing, `adopt` says what to answer (the
/// refusal itself, or a retryable error while the provider's search
/// catches up).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use ledgerflow_adapters::kit::customers::find_or_create;
/// use ledgerflow_workflows::provider::ProviderError;
/// let id = find_or_create(
///     async { Ok(None) },
///     || async { Err(ProviderError::permanent("name already taken", None)) },
///     |e| matches!(e, ProviderError::Permanent { .. }),
///     |_refusal| async { Ok("winner".to_string()) },
/// )
/// .await;
/// assert_eq!(id, Ok("winner".to_string()));
/// # });
/// ```
pub async fn find_or_create<T, Find, Create, Adopt>(
    find: Find,
    create: impl FnOnce() -> Create,
    is_race: impl Fn(&ProviderError) -> bool,
    adopt: impl FnOnce(ProviderError) -> Adopt,
) -> Result<T, ProviderError>
where
    Find: Future<Output = Result<Option<T>, ProviderError>>,
    Create: Future<Output = Result<T, ProviderError>>,
    Adopt: Future<Output = Result<T, ProviderError>>,
{
    if let Some(found) = find.await? {
        return Ok(found);
    }
    match create().await {
        Ok(made) => Ok(made),
        Err(refusal) if is_race(&refusal) => adopt(refusal).await,
        Err(e) => Err(e),
    }
}

/// The lookup each waiting sync shares: empty until one succeeds.
type Turn<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// In-flight customer lookups, keyed by connection and the provider's
/// customer key (contact number, e-mail address).
pub struct CustomerLookups<T> {
    in_flight: Mutex<HashMap<(i64, String), Turn<T>>>,
}

impl<T> Default for CustomerLookups<T> {
    fn default() -> Self {
        CustomerLookups {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> CustomerLookups<T> {
    /// Runs `find_or_create` for `(connection_id, key)` unless another sync
    /// in this process is already running it, in which case it waits and
    /// takes that answer. When that one failed, the next waiter tries.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use ledgerflow_adapters::kit::customers::CustomerLookups;
    /// let lookups = CustomerLookups::<String>::default();
    /// let id = lookups
    ///     .find_or_create(7, "cust-1", || async { Ok::<_, ()>("contact-9".to_string()) })
    ///     .await;
    /// assert_eq!(id, Ok("contact-9".to_string()));
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    /// # }
    /// ```
    pub async fn find_or_create<E, F, Fut>(
        &self,
        connection_id: i64,
        key: &str,
        find_or_create: F,
    ) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let entry = (connection_id, key.to_string());
        let turn = Arc::clone(self.lock().entry(entry.clone()).or_default());
        // Forgets the entry however this ends (answer, error, or the sync
        // dropped mid-call), so a later sync looks the customer up afresh.
        let _forget = Forget {
            lookups: self,
            entry,
            turn: Arc::clone(&turn),
        };
        let mut answer = turn.lock().await;
        if let Some(found) = answer.as_ref() {
            // Spared the find that usually finds a known customer (one
            // call), so the job's call reservation shrinks by one.
            call_budget::spare(1);
            return Ok(found.clone());
        }
        let found = find_or_create().await?;
        *answer = Some(found.clone());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), Turn<T>>> {
        // The map holds no invariant a panicking holder could break.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

struct Forget<'a, T: Clone> {
    lookups: &'a CustomerLookups<T>,
    entry: (i64, String),
    turn: Turn<T>,
}

impl<T: Clone> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        let mut map = self.lookups.lock();
        // Syncs already waiting hold the turn and still get its answer; a
        // newer turn under the same key belongs to later syncs.
        if map
            .get(&self.entry)
            .is_some_and(|t| Arc::ptr_eq(t, &self.turn))
        {
            map.remove(&self.entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn syncs_asking_together_share_one_lookup() {
        let lookups = Arc::new(CustomerLookups::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (lookups, calls) = (lookups.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                lookups
                    .find_or_create(1, "cust-1", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, String>(9)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(9));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(lookups.in_flight(), 0, "nothing kept once answered");
    }

    #[tokio::test]
    async fn other_customers_and_connections_do_not_wait() {
        let lookups = Arc::new(CustomerLookups::<u32>::default());
        let slow = {
            let lookups = lookups.clone();
            tokio::spawn(async move {
                lookups
                    .find_or_create(1, "cust-1", || async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok::<_, String>(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quick = async {
            let a = lookups
                .find_or_create(1, "cust-2", || async { Ok::<_, String>(2) })
                .await;
            let b = lookups
                .find_or_create(2, "cust-1", || async { Ok::<_, String>(3) })
                .await;
            (a, b)
        };
        let (a, b) = tokio::time::timeout(Duration::from_secs(5), quick)
            .await
            .expect("not held up by another customer's lookup");
        assert_eq!((a, b), (Ok(2), Ok(3)));
        slow.abort();
    }

    #[tokio::test]
    async fn a_failed_lookup_is_not_shared_the_next_waiter_tries() {
        let lookups = Arc::new(CustomerLookups::<u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (lookups, calls) = (lookups.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                lookups
                    .find_or_create(1, "cust-1", || async {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        if n == 0 {
                            Err("500".to_string())
                        } else {
                            Ok(7)
                        }
                    })
                    .await
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers.sort();
        assert_eq!(answers, vec![Ok(7), Ok(7), Err("500".to_string())]);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one failure, one success");
        assert_eq!(lookups.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_sync_dropped_mid_lookup_leaves_nothing_behind() {
        let lookups = CustomerLookups::<u32>::default();
        let dropped = tokio::time::timeout(
            Duration::from_millis(20),
            lookups.find_or_create(1, "cust-1", || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, String>(1)
            }),
        )
        .await;
        assert!(dropped.is_err());
        assert_eq!(lookups.in_flight(), 0);
        let again = lookups
            .find_or_create(1, "cust-1", || async { Ok::<_, String>(4) })
            .await;
        assert_eq!(again, Ok(4));
    }
}
