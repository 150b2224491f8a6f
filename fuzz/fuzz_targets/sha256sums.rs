//! libFuzzer entry point of the `sha256sums` target; the work is in `targets.rs`.
#![no_main]

#[global_allocator]
static ALLOCATOR: imgforge_fuzz::LimitedAllocator = imgforge_fuzz::LimitedAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    imgforge_fuzz::sha256sums(data);
});
