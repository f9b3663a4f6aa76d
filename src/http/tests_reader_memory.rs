//! What an idle reader keeps: nothing grown by an earlier request.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::{KEPT_RANGES, Limits, Progress, RequestReader};

/// A body of tiny chunks makes the decoder report thousands of ranges per read; the reader must not keep
/// their capacity afterwards, or every idle keep-alive connection that once sent one holds it.
#[test]
fn the_reader_does_not_keep_range_capacity_between_requests() {
    let mut input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5000 {
        input.extend_from_slice(b"1\r\nx\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    let mut reader = RequestReader::new(Limits::default());
    let (consumed, progress) = reader.advance(&input);
    let (_, progress) = if consumed < input.len() && matches!(progress, Ok(Progress::NeedMore)) {
        reader.advance(&input[consumed..])
    } else {
        (consumed, progress)
    };
    match progress {
        Ok(Progress::Complete(req)) => assert_eq!(req.body.len(), 5000),
        other => panic!("{other:?}"),
    }
    assert!(
        reader.ranges.capacity() <= KEPT_RANGES,
        "{} ranges of capacity kept",
        reader.ranges.capacity()
    );
}
