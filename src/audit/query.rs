//! Streaming queries over a [`FileSink`](super::file::FileSink) directory. (Under construction.)
