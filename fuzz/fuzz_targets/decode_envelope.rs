//! Whatever arrives on a queue: decoding never panics, and what decodes encodes back
//! to something that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tsst_messages::{Envelope, Event, Task};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::<Task>::decode(data) {
        let again = Envelope::<Task>::decode(&env.encode().expect("a decoded task encodes"))
            .expect("an encoded task decodes");
        assert_eq!(again, env);
    }
    let _ = Envelope::<Event>::decode(data);
});
