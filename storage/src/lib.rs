//! Storage for icestream: object store access, the Kafka record batch and WAL segment
//! formats, and the metadata store (a transactional key-value interface with its backends,
//! and the domain written over it).

/// `impl ObjectStore for $ty` with the methods given in braces and every other method
/// delegated to the store in field `$inner`: for wrappers that change only how objects are
/// written (`put_opts` and `put_multipart_opts`, which each wrapper gives).
macro_rules! object_store_wrapper {
    ($ty:ty, $inner:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl object_store::ObjectStore for $ty {
            $($own)*

            async fn get_opts(
                &self,
                location: &object_store::path::Path,
                options: object_store::GetOptions,
            ) -> object_store::Result<object_store::GetResult> {
                self.$inner.get_opts(location, options).await
            }

            async fn get_ranges(
                &self,
                location: &object_store::path::Path,
                ranges: &[std::ops::Range<u64>],
            ) -> object_store::Result<Vec<bytes::Bytes>> {
                self.$inner.get_ranges(location, ranges).await
            }

            fn delete_stream(
                &self,
                locations: futures::stream::BoxStream<
                    'static,
                    object_store::Result<object_store::path::Path>,
                >,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
            {
                self.$inner.delete_stream(locations)
            }

            fn list(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
            {
                self.$inner.list(prefix)
            }

            fn list_with_offset(
                &self,
                prefix: Option<&object_store::path::Path>,
                offset: &object_store::path::Path,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
            {
                self.$inner.list_with_offset(prefix, offset)
            }

            async fn list_with_delimiter(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> object_store::Result<object_store::ListResult> {
                self.$inner.list_with_delimiter(prefix).await
            }

            async fn copy_opts(
                &self,
                from: &object_store::path::Path,
                to: &object_store::path::Path,
                options: object_store::CopyOptions,
            ) -> object_store::Result<()> {
                self.$inner.copy_opts(from, to, options).await
            }

            async fn rename_opts(
                &self,
                from: &object_store::path::Path,
                to: &object_store::path::Path,
                options: object_store::RenameOptions,
            ) -> object_store::Result<()> {
                self.$inner.rename_opts(from, to, options).await
            }
        }
    };
}

pub mod batch;
pub mod clock;
pub mod compression;
pub mod direct_fs;
pub mod faults;
pub mod kv;
pub mod legacy;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod objects;
pub mod records;
pub mod segment;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use meta::{MetaError, MetaStore};
pub use objects::{Objects, StoreKind};
