use std::time::{Duration, Instant};

use crm_sync_proto::Message;
use crm_sync_proto::v1::RecordState;
use rdkafka::ClientConfig;

use super::*;

fn open_store(name: &str) -> (Arc<RecordStore>, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("crm-sync-store-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = Source::new(ClientConfig::new(), "records");
    // A budget of 8 MiB: 1 MiB memtables, fjall's own limit at 2 MiB.
    let (store, _wakes) = RecordStore::open(&dir, 8 * 1024 * 1024, source, "events").unwrap();
    (store, dir)
}

fn state(id: &str) -> RecordState {
    RecordState {
        record_id: id.to_owned(),
        object_type: "x".repeat(4096),
        ..Default::default()
    }
}

/// Commits `n` transactions of 16 states of about 4 KiB each to partition 0.
fn commit_states(store: &RecordStore, n: usize) {
    for t in 0..n {
        for i in 0..16 {
            let id = format!("{t}-{i}");
            let key = format!("integration/Deal/{id}").into_bytes();
            store.stage(0, key, state(&id).encode_to_vec());
        }
        store.seal();
        store.commit(&[], "records");
    }
}

#[test]
fn a_full_memtable_is_flushed_without_waiting_for_fjall_to_rotate_it() {
    let (store, dir) = open_store("rotate");
    // 20 commits of 64 KiB: 1.3 MiB, over the store's 1 MiB and under fjall's 2 MiB.
    commit_states(&store, 20);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.db.write_buffer_size() > 512 * 1024 {
        assert!(
            Instant::now() < deadline,
            "{} bytes still unflushed: the full memtable was not rotated",
            store.db.write_buffer_size()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = "integration/Deal/0-0";
    let read = store.get(0, key.as_bytes()).unwrap().unwrap();
    assert_eq!(
        read.view(key).unwrap().state,
        state("0-0"),
        "a flushed state reads back"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_integrations_held_are_listed_and_one_of_them_forgotten() {
    let (store, dir) = open_store("held");
    store.assigned(&[("events".to_owned(), 0)]);
    if let Some(slot) = lock(&store.slots).get_mut(&0) {
        slot.restored = true;
    }
    for key in [
        "a/Deal/1",
        "a/Deal/2",
        "a-b/Deal/1",
        "b/Deal/1",
        "b/Deal/2",
        "b/Deal/3",
        "odd",
    ] {
        store.stage(0, key.as_bytes().to_vec(), state(key).encode_to_vec());
    }
    store.seal();
    store.commit(&[], "records");
    let held = store.held_integrations().unwrap();
    // In key order: `-` sorts before `/`.
    let ids = ["a-b", "a", "b"].map(str::to_owned).to_vec();
    assert_eq!(held, vec![(0, ids)]);

    let keys = store.keys_of(0, "b", 2).unwrap();
    assert_eq!(keys, vec![b"b/Deal/1".to_vec(), b"b/Deal/2".to_vec()]);
    store.forget(0, &keys).unwrap();
    assert_eq!(
        store.keys_of(0, "b", 10).unwrap(),
        vec![b"b/Deal/3".to_vec()]
    );
    assert!(store.get(0, b"a/Deal/1").unwrap().is_some());
    assert!(store.get(0, b"b/Deal/1").unwrap().is_none());
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// Restores so far by [`rebalanced_while_restoring`].
static RESTORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A restore during which partition 0 is revoked and assigned again (another replica owned it
/// meanwhile and wrote to its changelog past the end this restore read to).
fn rebalanced_while_restoring(store: &RecordStore, partition: i32) -> Result<Restored, StoreError> {
    if RESTORES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
        store.revoked(&[("events".to_owned(), partition)]);
        store.assigned(&[("events".to_owned(), partition)]);
    }
    Ok(Restored::default())
}

#[tokio::test]
async fn a_restore_that_a_rebalance_overtook_does_not_count_for_the_new_assignment() {
    let (store, dir) = open_store("overtaken");
    store.assigned(&[("events".to_owned(), 0)]);
    store
        .ready_with(0, rebalanced_while_restoring)
        .await
        .unwrap();
    assert_eq!(
        RESTORES.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the state written while the partition was elsewhere was never read"
    );
    assert!(store.is_restored(0));
    assert_eq!(store.readiness(), Ok(()));
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_restore_of_a_partition_revoked_meanwhile_does_not_bring_its_slot_back() {
    let (store, dir) = open_store("revoked");
    store.assigned(&[("events".to_owned(), 1)]);
    store
        .ready_with(1, |store, partition| {
            store.revoked(&[("events".to_owned(), partition)]);
            Ok(Restored::default())
        })
        .await
        .unwrap();
    assert!(
        lock(&store.slots).get(&1).is_none(),
        "a revoked partition came back as assigned"
    );
    store.assigned(&[("events".to_owned(), 1)]);
    assert!(
        !store.is_restored(1),
        "a new assignment counted as restored"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

static STALE_RESTORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A restore during which a transaction of partition 2 aborted with its outcome unknown.
fn aborted_while_restoring(store: &RecordStore, partition: i32) -> Result<Restored, StoreError> {
    if STALE_RESTORES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
        store.discard(&[partition]);
    }
    Ok(Restored::default())
}

#[tokio::test]
async fn a_partition_marked_stale_while_restoring_is_caught_up_again() {
    let (store, dir) = open_store("stale");
    store.assigned(&[("events".to_owned(), 2)]);
    store.ready_with(2, aborted_while_restoring).await.unwrap();
    assert_eq!(
        STALE_RESTORES.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a commit of unknown outcome was never read back"
    );
    assert!(store.is_restored(2));
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// A restore that checks it starts from scratch, as a restore after a failed read must.
fn from_scratch(store: &RecordStore, partition: i32) -> Result<Restored, StoreError> {
    assert!(
        store.restores_from_scratch(partition),
        "restored from the checkpoint"
    );
    Ok(Restored::default())
}

#[tokio::test]
async fn an_unreadable_state_restores_the_partition_from_scratch_once_then_counts_as_never_seen() {
    let (store, dir) = open_store("unreadable");
    store.assigned(&[("events".to_owned(), 3)]);
    store
        .ready_with(3, |_, _| Ok(Restored::default()))
        .await
        .unwrap();
    let key = "integration/Deal/1";
    store.stage(3, key.as_bytes().to_vec(), b"\xff\xff not a state".to_vec());
    store.seal();
    store.commit(&[], "records");
    let stored = store.get(3, key.as_bytes()).unwrap().unwrap();
    let Err(error) = stored.view(key) else {
        panic!("garbage decoded as a state");
    };
    assert_eq!(store.unreadable(3, key, &error), Unreadable::Restoring);
    assert!(
        !store.is_restored(3),
        "the partition was not marked for a restore"
    );
    // Read again before the restore ran (the batch replayed): still waiting for it.
    assert_eq!(store.unreadable(3, key, &error), Unreadable::Restoring);
    store.ready_with(3, from_scratch).await.unwrap();

    // The changelog holds the same bad value: it counts as never seen, the partition goes on.
    assert_eq!(store.unreadable(3, key, &error), Unreadable::Absent);
    // The disk failing even after a restore from scratch is a real fault.
    let disk = StoreError::Restore {
        partition: 3,
        reason: "an I/O error".into(),
    };
    assert_eq!(store.unreadable(3, key, &disk), Unreadable::Fault);
    drop(stored);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
