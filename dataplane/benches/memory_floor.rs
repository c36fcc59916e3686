//! The floor under the mesh bench's scale figures: what looking a key up in a table of N
//! entries costs on this machine when the lookup does nothing else, in the mesh's shape (an
//! open-addressing index of 32-bit ids at load 1/8, and one 64-byte line per entry), over
//! bursts of 32 keys with the mesh's two prefetch stages (every index slot first, then each
//! entry's line once its slot has come).
//!
//! Two variants: `lines=1` reads the index slot only, `lines=2` reads the slot and the entry's
//! line, as the mesh's IPv4 fast path does. The difference between N = 1 000 000 and N = 1 is
//! the least a flow table touching that many lines per packet can add at a million flows:
//! cache misses (and, in a VM, the walks of the host's page tables) that prefetching overlaps
//! but cannot remove.
//!
//! Prints `memory floor entries=N lines=L cycles_per_lookup=C (median of 5)`.

use dataplane::cycles;
use dataplane::hint::prefetch;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    key: u64,
    hits: u64,
    _rest: [u64; 6],
}

fn hash(x: u64) -> usize {
    let m = u128::from(x) * 0x9e37_79b9_7f4a_7c15;
    let folded = (m >> 64) ^ (m & u128::from(u64::MAX));
    usize::try_from(folded & 0xffff_ffff).unwrap_or(0)
}

fn measure(entries: usize, lines: usize) -> f64 {
    let size = (entries * 8).next_power_of_two();
    let mask = size - 1;
    let mut index = vec![u32::MAX; size];
    let mut table = vec![Entry { key: u64::MAX, hits: 0, _rest: [0; 6] }; entries];
    for (i, e) in table.iter_mut().enumerate() {
        let key = i as u64;
        let mut j = hash(key) & mask;
        while index[j] != u32::MAX {
            j = (j + 1) & mask;
        }
        index[j] = u32::try_from(i).unwrap_or(u32::MAX);
        e.key = key;
    }
    let find = |index: &[u32], table: &[Entry], key: u64| -> usize {
        let mut j = hash(key) & mask;
        loop {
            let id = index[j] as usize;
            if id == u32::MAX as usize || table[id].key == key {
                return id;
            }
            j = (j + 1) & mask;
        }
    };
    let lookups = 3_000_000usize.max(entries);
    let mut next = 0u64;
    let mut samples = Vec::new();
    let mut found = 0u64;
    for _ in 0..6 {
        let t0 = cycles::now();
        for _ in 0..lookups / 32 {
            let keys: [u64; 32] = std::array::from_fn(|b| (next + b as u64) % entries as u64);
            next = (next + 32) % entries as u64;
            for k in &keys {
                prefetch(index.as_ptr().wrapping_add(hash(*k) & mask));
            }
            if lines == 1 {
                for k in &keys {
                    found += u64::from(index[hash(*k) & mask] != u32::MAX);
                }
                continue;
            }
            let mut ids = [0usize; 32];
            for (id, k) in ids.iter_mut().zip(&keys) {
                *id = index[hash(*k) & mask] as usize;
                prefetch(table.as_ptr().wrapping_add(*id));
            }
            for k in &keys {
                let id = find(&index, &table, *k);
                if let Some(e) = table.get_mut(id) {
                    e.hits += 1;
                    found += 1;
                }
            }
        }
        samples.push((cycles::now() - t0) as f64 / (lookups / 32 * 32) as f64);
    }
    assert_eq!(found, 6 * (lookups / 32 * 32) as u64, "every key found");
    // The first round warms the caches.
    samples.remove(0);
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn main() {
    if let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.into_iter().last()) {
        core_affinity::set_for_current(core);
    }
    for lines in [1, 2] {
        for entries in [1, 1_000_000] {
            let c = measure(entries, lines);
            println!("memory floor entries={entries} lines={lines} cycles_per_lookup={c:.1} (median of 5)");
        }
    }
}
