//! Apache Iceberg: data files appended in a snapshot whose summary carries every partition's
//! next offset (`kafkatable.<topic>.<partition>`), carried forward from the snapshot before;
//! the same commit sets them as table properties too, which outlive snapshot expiry.
//!
//! The fence: iceberg-rust's `Transaction::commit` reloads the table and silently re-applies
//! an append on top of a concurrent one. We commit through [`PinnedCatalog`], which answers
//! that reload with the very table whose sync points we checked, so the append's own
//! requirement (the branch still points at that snapshot) makes the catalog refuse the commit
//! when another writer got in first, and the refusal is not retried. REST catalogs and the SQL
//! catalog (compare-and-set on the metadata location) both enforce the requirement.
//!
//! Partitioning: a table created by the ingester gets a partition spec from
//! `spec.table.partitionBy`. Time transforms partition by the derived `<field>_<unit>` column
//! (identity), the same column a Delta table gets, since the event time may be an epoch number
//! or a string that Iceberg's own time transforms do not take; identity, bucket[N] and
//! truncate[N] are Iceberg transforms of the field. An existing table keeps its own spec, and
//! the writer follows whatever spec the table has: rows are split by partition and every
//! partition's files roll at the target size.

mod widen;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::Field;
use async_trait::async_trait;
use futures::StreamExt;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::arrow::arrow_schema_to_schema_auto_assign_ids;
use iceberg::spec::{DataFile, DataFileFormat, PartitionKey, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{CurrentFileStatus, IcebergWriter, IcebergWriterBuilder};
use iceberg::{
    Catalog, CatalogBuilder, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation,
    TableIdent,
};
use kafkatable_crds::config::{CatalogConfig, Partition, StorageConfig, Transform};
use kafkatable_crds::spec::CatalogType;

use super::{CommitOutcome, PartitionRange, SyncPoints, keys, moved};
use crate::decode::{OFFSET_COLUMN, PARTITION_COLUMN};
use crate::error::IngesterError;
use crate::schema::{AlignError, align};
use crate::source::{read_credentials, read_secret};

/// Commit attempts when the table moves under us without touching our partitions.
const COMMIT_ATTEMPTS: usize = 8;

/// What the catalog's Secret holds.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Token(String),
    UserPassword(String, String),
}

/// The catalog's credentials from its Secret's files: a `token`, else a `username` and
/// `password`. A Secret with neither is an error, not a catalog asked without credentials.
fn catalog_credentials(catalog: &CatalogConfig) -> Result<Option<Credentials>, IngesterError> {
    let Some(token_file) = &catalog.token_file else {
        return Ok(None);
    };
    if let Ok(token) = read_secret(token_file) {
        return Ok(Some(Credentials::Token(token)));
    }
    let login = catalog
        .basic_auth
        .as_ref()
        .and_then(|files| read_credentials(files).ok());
    match login {
        Some((user, password)) => Ok(Some(Credentials::UserPassword(user, password))),
        None => Err(IngesterError::Unsupported(format!(
            "spec.table.catalog.credentialsSecretRef: the Secret has neither a token key nor username and password keys (looked for {})",
            token_file.display()
        ))),
    }
}

/// A SQL catalog's URI with the user name and password in it. A REST catalog takes a bearer
/// token, and an SQLite file no login.
fn sql_uri_with_login(
    catalog: &CatalogConfig,
    user: &str,
    password: &str,
) -> Result<String, IngesterError> {
    let refuse = |why: &str| {
        IngesterError::Unsupported(format!(
            "spec.table.catalog.credentialsSecretRef: username and password {why}"
        ))
    };
    if catalog.type_ != CatalogType::Sql {
        return Err(refuse(
            "are for SQL catalogs; a REST catalog takes a bearer token (a `token` key)",
        ));
    }
    let mut url = url::Url::parse(&catalog.uri)
        .map_err(|e| refuse(&format!("need a URI with a host: {e}")))?;
    if url.scheme() == "sqlite" || url.host().is_none() {
        return Err(refuse(
            "are for postgres and mysql catalogs; an SQLite file takes none",
        ));
    }
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| refuse("do not fit the catalog URI"))?;
    Ok(url.to_string())
}

/// The data files of the next commit (owned by its transaction): those still open, and those
/// finished when the table gained columns (written with the schema before).
#[derive(Default)]
pub struct IcebergFiles {
    open: Option<StagedFiles>,
    finished: Vec<DataFile>,
}

/// Commits to one Iceberg table.
pub struct IcebergCommitter {
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    topic: String,
    target_file_size: usize,
    /// The partitioning of a table the ingester creates.
    partition_by: Vec<Partition>,
    /// The table as of the last read; commits are fenced against it.
    table: Option<Table>,
    /// The catalog, and its token (REST) or URI with the login (SQL), for the schema commits
    /// iceberg-rust cannot make (see [`widen`]).
    config: CatalogConfig,
    credentials: Option<String>,
}

impl IcebergCommitter {
    pub async fn open(
        catalog: &CatalogConfig,
        storage: &StorageConfig,
        topic: &str,
        target_file_size: u64,
        partition_by: Vec<Partition>,
    ) -> Result<Self, IngesterError> {
        let name = format!("{}.{}", catalog.namespace.join("."), catalog.table);
        let err = |action: &'static str, e: iceberg::Error| IngesterError::table(&name, action, e);
        let mut props = HashMap::new();
        let mut uri = catalog.uri.clone();
        let mut credentials = None;
        match catalog_credentials(catalog)? {
            None => {}
            Some(Credentials::Token(token)) => {
                credentials = Some(token.clone());
                props.insert("token".to_string(), token);
            }
            Some(Credentials::UserPassword(user, password)) => {
                uri = sql_uri_with_login(catalog, &user, &password)?;
                credentials = Some(uri.clone());
            }
        }
        props.insert("uri".to_string(), uri);
        if let Some(warehouse) = &catalog.warehouse {
            props.insert("warehouse".into(), warehouse.clone());
        }
        if let Some(endpoint) = &storage.endpoint {
            props.insert("s3.endpoint".into(), endpoint.clone());
        }
        if let Some(region) = &storage.region {
            props.insert("s3.region".into(), region.clone());
        }
        props.insert(
            "s3.path-style-access".into(),
            storage.path_style.to_string(),
        );
        if let Some(file) = &storage.access_key_id_file {
            props.insert("s3.access-key-id".into(), read_secret(file)?);
        }
        if let Some(file) = &storage.secret_access_key_file {
            props.insert("s3.secret-access-key".into(), read_secret(file)?);
        }
        let storage_factory =
            Arc::new(iceberg_storage_opendal::OpenDalResolvingStorageFactory::new());
        let catalog_impl: Arc<dyn Catalog> = match catalog.type_ {
            CatalogType::Rest => Arc::new(
                iceberg_catalog_rest::RestCatalogBuilder::default()
                    .with_storage_factory(storage_factory)
                    .load(catalog.name.clone(), props)
                    .await
                    .map_err(|e| err("connect to the REST catalog", e))?,
            ),
            CatalogType::Sql => Arc::new(
                iceberg_catalog_sql::SqlCatalogBuilder::default()
                    .with_storage_factory(storage_factory)
                    .load(catalog.name.clone(), props)
                    .await
                    .map_err(|e| err("open the SQL catalog", e))?,
            ),
        };
        let namespace = NamespaceIdent::from_vec(catalog.namespace.clone())
            .map_err(|e| err("name the namespace", e))?;
        // Catalog clients connect lazily: ask once now, so an unreachable catalog is reported
        // (and retried) before the ingester joins the consumer group.
        catalog_impl
            .namespace_exists(&namespace)
            .await
            .map_err(|e| err("reach the catalog", e))?;
        let mut committer = Self {
            catalog: catalog_impl,
            ident: TableIdent::new(namespace, catalog.table.clone()),
            topic: topic.to_string(),
            target_file_size: usize::try_from(target_file_size).unwrap_or(usize::MAX),
            partition_by,
            table: None,
            config: catalog.clone(),
            credentials,
        };
        // The table's schema is what records are decoded against (see `crate::schema`).
        committer.load().await?;
        Ok(committer)
    }

    /// The table's namespace and name, dotted.
    pub fn name(&self) -> String {
        format!("{}.{}", self.ident.namespace().join("."), self.ident.name())
    }

    async fn load(&mut self) -> Result<Option<&Table>, IngesterError> {
        match self.catalog.load_table(&self.ident).await {
            Ok(table) => {
                self.table = Some(table);
                Ok(self.table.as_ref())
            }
            Err(e)
                if e.kind() == ErrorKind::TableNotFound
                    || e.kind() == ErrorKind::NamespaceNotFound =>
            {
                self.table = None;
                Ok(None)
            }
            Err(e) => Err(IngesterError::table(&self.name(), "load the table", e)),
        }
    }

    pub async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        let topic = self.topic.clone();
        let Some(table) = self.load().await? else {
            return Ok(SyncPoints::new());
        };
        let all = table_sync_points(table, &topic);
        Ok(if partitions.is_empty() {
            all
        } else {
            all.into_iter()
                .filter(|(p, _)| partitions.contains(p))
                .collect()
        })
    }

    /// The offsets of `partition`'s rows from `from` (None: from the start) to before
    /// `until`, by the `_kafka_partition` and `_kafka_offset` columns.
    pub async fn offsets_in(
        &mut self,
        partition: i32,
        from: Option<i64>,
        until: i64,
    ) -> Result<BTreeSet<i64>, IngesterError> {
        use iceberg::expr::Reference;
        use iceberg::spec::Datum;
        let name = self.name();
        let err = |e: iceberg::Error| {
            IngesterError::unreachable(IngesterError::table(&name, "read the rows", e))
        };
        let Some(table) = self.load().await? else {
            return Ok(BTreeSet::new());
        };
        if table.metadata().current_snapshot().is_none() {
            return Ok(BTreeSet::new());
        }
        let mut filter = Reference::new(PARTITION_COLUMN)
            .equal_to(Datum::int(partition))
            .and(Reference::new(OFFSET_COLUMN).less_than(Datum::long(until)));
        if let Some(from) = from {
            filter = filter
                .and(Reference::new(OFFSET_COLUMN).greater_than_or_equal_to(Datum::long(from)));
        }
        let mut stream = table
            .scan()
            .select([PARTITION_COLUMN, OFFSET_COLUMN])
            .with_filter(filter)
            .build()
            .map_err(err)?
            .to_arrow()
            .await
            .map_err(err)?;
        let mut offsets = BTreeSet::new();
        while let Some(batch) = stream.next().await {
            super::collect_offsets(&batch.map_err(err)?, partition, from, until, &mut offsets);
        }
        Ok(offsets)
    }

    async fn create(&mut self, batch: &RecordBatch) -> Result<(), IngesterError> {
        let name = self.name();
        let schema = arrow_schema_to_schema_auto_assign_ids(batch.schema().as_ref())
            .map_err(|e| IngesterError::table(&name, "map the schema", e))?;
        let namespace = self.ident.namespace().clone();
        // Another ingester may create it at the same moment, and not every catalog answers the
        // loser with "already exists": check before failing.
        if let Err(e) = self
            .catalog
            .create_namespace(&namespace, HashMap::new())
            .await
            && !self
                .catalog
                .namespace_exists(&namespace)
                .await
                .unwrap_or(false)
        {
            return Err(IngesterError::table(&name, "create the namespace", e));
        }
        let spec = partition_spec(&schema, &self.partition_by)
            .map_err(|reason| IngesterError::table(&name, "plan the partitioning", reason))?;
        let creation = TableCreation::builder()
            .name(self.ident.name().to_string())
            .schema(schema)
            .partition_spec(spec)
            .build();
        match self.catalog.create_table(&namespace, creation).await {
            Ok(table) => self.table = Some(table),
            Err(e) => {
                if self.load().await?.is_none() {
                    return Err(IngesterError::table(&name, "create the table", e));
                }
            }
        }
        Ok(())
    }

    /// Encodes `batches` into data files of the table (created first when missing): written to
    /// storage by iceberg-rust as they fill, appended by the next [`Self::commit`].
    pub async fn stage(
        &mut self,
        staged: &mut IcebergFiles,
        batches: Vec<RecordBatch>,
    ) -> Result<(), IngesterError> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        if self.table.is_none() && self.load().await?.is_none() {
            self.create(first).await?;
        }
        // Batches with fields the open files lack widen the table first (the ingester only
        // makes such batches with `schemaEvolution: addColumns`); the open files, written
        // with the schema before, are finished, and files of the new schema opened.
        let outgrown = staged.open.as_ref().is_none_or(|files| {
            batches.iter().any(|b| {
                crate::schema::unknown_field(b.schema().fields(), files.arrow_schema.fields())
                    .is_some()
                    || writes_wider(&b.schema(), &files.arrow_schema)
            })
        });
        if outgrown {
            self.widen_columns(&batches).await?;
            self.add_new_columns(&batches).await?;
            if let Some(files) = staged.open.take() {
                let finished = files
                    .close()
                    .await
                    .map_err(|e| IngesterError::table(&self.name(), "close the data files", e))?;
                staged.finished.extend(finished);
            }
        }
        if staged.open.is_none() {
            let Some(table) = self.table.clone() else {
                return Err(IngesterError::table(
                    &self.name(),
                    "write",
                    "the table vanished",
                ));
            };
            staged.open = Some(self.open_writer(&table).await?);
        }
        let name = self.name();
        let Some(files) = staged.open.as_mut() else {
            return Ok(());
        };
        for batch in batches {
            let batch = align(batch, &files.arrow_schema).map_err(|e| match e {
                // The table was widened for these batches above: another writer's change.
                AlignError::NewFields(fields) => IngesterError::table(
                    &name,
                    "match the table schema",
                    format!(
                        "the records have fields the table lacks: {}",
                        fields.join(", ")
                    ),
                ),
                AlignError::Schema(reason) => {
                    IngesterError::table(&name, "match the table schema", reason)
                }
                AlignError::Value(bad) => IngesterError::Decode(bad),
            })?;
            files
                .write(batch)
                .await
                .map_err(|e| IngesterError::table(&name, "write a data file", e))?;
        }
        Ok(())
    }

    /// Adds the fields the batches carry and the table lacks as optional columns (inside
    /// structs too), in a schema-only commit of its own: new optional columns are harmless even
    /// if the data commit after it loses a race, and data files must be written with the new
    /// field ids.
    async fn add_new_columns(&mut self, batches: &[RecordBatch]) -> Result<(), IngesterError> {
        let name = self.name();
        let err = |action: &'static str, e: iceberg::Error| IngesterError::table(&name, action, e);
        let Some(table) = self.table.clone() else {
            return Ok(());
        };
        let current = arrow_schema(&table).map_err(|e| err("map the table schema", e))?;
        // (the struct a field goes into, the field), each path once.
        let mut added: Vec<(Vec<String>, Field)> = Vec::new();
        for batch in batches {
            for (parent, field) in
                crate::schema::added_fields(batch.schema().fields(), current.fields())
            {
                if !added
                    .iter()
                    .any(|(p, f)| *p == parent && f.name() == field.name())
                {
                    added.push((parent, field));
                }
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let tx = Transaction::new(&table);
        let mut update = tx.update_schema();
        for (parent, field) in &added {
            let column_type = iceberg_type(field).map_err(|e| err("map a new column", e))?;
            update = update.add_column(match parent.is_empty() {
                true => AddColumn::optional(field.name(), column_type),
                false => AddColumn::builder()
                    .parent(parent.join("."))
                    .name(field.name())
                    .field_type(column_type)
                    .build(),
            });
        }
        let tx = update
            .apply(tx)
            .map_err(|e| err("prepare the schema change", e))?;
        let columns: Vec<String> = added
            .iter()
            .map(|(parent, f)| crate::schema::field_path(parent, f))
            .collect();
        match tx.commit(self.catalog.as_ref()).await {
            Ok(widened) => {
                tracing::info!(table = %name, ?columns, "added columns to the table");
                self.table = Some(widened);
                Ok(())
            }
            Err(e) => {
                // Another ingester may have added the same columns first: then use its schema.
                self.load().await?;
                let widened = self
                    .table
                    .as_ref()
                    .map(arrow_schema)
                    .transpose()
                    .map_err(|e| err("map the table schema", e))?;
                if widened.is_some_and(|w| {
                    batches.iter().all(|b| {
                        crate::schema::unknown_field(b.schema().fields(), w.fields()).is_none()
                    })
                }) {
                    tracing::info!(table = %name, ?columns, "another writer added the columns first");
                    Ok(())
                } else {
                    Err(err("add columns", e))
                }
            }
        }
    }

    /// Widens the columns the batches write wider (int as long, say) to their type, in a
    /// schema-only commit of its own (see [`widen`]); when another writer changed the schema
    /// first, the table is read again and the batches meet whatever it has.
    async fn widen_columns(&mut self, batches: &[RecordBatch]) -> Result<(), IngesterError> {
        let name = self.name();
        let Some(table) = self.table.clone() else {
            return Ok(());
        };
        let schemas: Vec<_> = batches.iter().map(RecordBatch::schema).collect();
        let records: Vec<&arrow::datatypes::Schema> = schemas.iter().map(AsRef::as_ref).collect();
        let promoted = widen::promoted(table.metadata().current_schema(), &records)
            .map_err(|e| IngesterError::table(&name, "widen columns", e))?;
        let Some((schema, columns)) = promoted else {
            return Ok(());
        };
        match widen::commit_schema(&self.config, self.credentials.as_deref(), &table, schema).await
        {
            Ok(()) => tracing::info!(table = %name, ?columns, "widened columns of the table"),
            Err(widen::Refused::Conflict(reason)) => {
                tracing::info!(table = %name, %reason, "another writer changed the schema first")
            }
            Err(widen::Refused::Failed(reason)) => {
                return Err(IngesterError::table(&name, "widen columns", reason));
            }
        }
        self.load().await?;
        Ok(())
    }

    /// The table's columns as of the last read (None before the table exists).
    pub fn table_schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        arrow_schema(self.table.as_ref()?).ok()
    }

    /// The size iceberg-rust reports for the open data files: their finished row groups and
    /// the one in progress, with its dictionaries and current pages not yet compressed. Finished
    /// row groups may be partly in storage already (a file goes to S3 in parts of at least
    /// 5 MiB), and the encoders' other working memory is not in it.
    pub fn staged_bytes(staged: &IcebergFiles) -> usize {
        staged
            .open
            .as_ref()
            .map_or(0, |s| s.open_bytes.load(Ordering::Relaxed))
    }

    /// Drops the staged files. (Files iceberg-rust already wrote stay as orphans, which
    /// Iceberg's orphan-file removal cleans up; they are not part of the table.)
    pub async fn discard(&mut self, staged: IcebergFiles) {
        drop(staged);
    }

    /// Closes the staged files and appends them with the ranges' offsets, fenced on the table
    /// as the caller's sync point check read it (see [`super::Committer::commit`]).
    pub async fn commit(
        &mut self,
        staged: IcebergFiles,
        ranges: &[PartitionRange],
    ) -> Result<CommitOutcome, IngesterError> {
        let name = self.name();
        let Some(table) = self.table.clone() else {
            return Err(IngesterError::table(
                &name,
                "commit",
                "no table and no records to create it from",
            ));
        };
        let mut data_files = staged.finished;
        if let Some(open) = staged.open {
            let closed = open
                .close()
                .await
                .map_err(|e| IngesterError::table(&name, "close the data files", e))?;
            data_files.extend(closed);
        }
        // Iceberg's optimistic concurrency is table-wide: an append to other partitions also
        // refuses ours. Then re-read the table and re-check only our partitions; if nobody
        // moved them, commit the same files again, pinned to the new snapshot.
        let mut base = table;
        for _ in 0..COMMIT_ATTEMPTS {
            let current = table_sync_points(&base, &self.topic);
            let conflicting = moved(ranges, &current);
            if !conflicting.is_empty() {
                self.table = None;
                return Ok(CommitOutcome::Conflict {
                    partitions: conflicting,
                });
            }
            let mut properties: HashMap<String, String> = current
                .iter()
                .map(|(p, offset)| (keys::iceberg_key(&self.topic, *p), offset.to_string()))
                .collect();
            for r in ranges {
                properties.insert(
                    keys::iceberg_key(&self.topic, r.partition),
                    r.next.to_string(),
                );
            }
            // The same offsets also go into the table's properties, in the same atomic commit:
            // a compaction and snapshot expiry by another engine can remove every snapshot
            // that carries them in its summary, never the properties.
            let tx = Transaction::new(&base);
            let mut props = tx.update_table_properties();
            for (key, value) in &properties {
                props = props.set(key.clone(), value.clone());
            }
            let tx = props
                .apply(tx)
                .map_err(|e| IngesterError::table(&name, "prepare the snapshot", e))?;
            let tx = tx
                .fast_append()
                .add_data_files(data_files.clone())
                .set_snapshot_properties(properties)
                .apply(tx)
                .map_err(|e| IngesterError::table(&name, "prepare the snapshot", e))?;
            let pinned = PinnedCatalog {
                inner: self.catalog.clone(),
                pinned: base.clone(),
            };
            match tx.commit(&pinned).await {
                Ok(committed) => {
                    let version = committed.metadata().last_sequence_number();
                    let snapshot_id = committed.metadata().current_snapshot_id();
                    self.table = Some(committed);
                    return Ok(CommitOutcome::Committed {
                        version,
                        snapshot_id,
                    });
                }
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                    tracing::debug!(table = %name, error = %e, "the table moved; re-checking our partitions");
                    base = self
                        .catalog
                        .load_table(&self.ident)
                        .await
                        .map_err(|e| IngesterError::table(&name, "reload the table", e))?;
                }
                Err(e) => return Err(IngesterError::table(&name, "commit", e)),
            }
        }
        tracing::info!(table = %name, attempts = COMMIT_ATTEMPTS, "the table kept moving; giving the batch up");
        self.table = None;
        Ok(CommitOutcome::Conflict {
            partitions: ranges.iter().map(|r| r.partition).collect(),
        })
    }

    /// A writer of data files for `table`'s current schema and partition spec.
    async fn open_writer(&self, table: &Table) -> Result<StagedFiles, IngesterError> {
        let name = self.name();
        let err = |action: &'static str, e: iceberg::Error| IngesterError::table(&name, action, e);
        let props = super::writer_properties().build();
        let schema = table.metadata().current_schema().clone();
        let parquet = ParquetWriterBuilder::new_with_match_mode(
            props,
            schema,
            iceberg::arrow::FieldMatchMode::Name,
        );
        let locations = DefaultLocationGenerator::new(table.metadata())
            .map_err(|e| err("plan file locations", e))?;
        let names = DefaultFileNameGenerator::new(
            "kafkatable".into(),
            Some(super::unique_name()),
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            self.target_file_size,
            table.file_io().clone(),
            locations,
            names,
        );
        let open_bytes = Arc::new(AtomicUsize::new(0));
        let files = Counted {
            inner: DataFileWriterBuilder::new(rolling),
            open_bytes: open_bytes.clone(),
            counted: 0,
        };
        let arrow_schema = arrow_schema(table).map_err(|e| err("map the table schema", e))?;
        let spec = table.metadata().default_partition_spec();
        let writer = if spec.is_unpartitioned() {
            FileWriter::Plain(Box::new(
                files
                    .build(None)
                    .await
                    .map_err(|e| err("open a data file", e))?,
            ))
        } else {
            let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
                table.metadata().current_schema().clone(),
                spec.clone(),
            )
            .map_err(|e| err("plan the partitioning", e))?;
            FileWriter::Partitioned(Box::new((FanoutWriter::new(files), splitter)))
        };
        Ok(StagedFiles {
            arrow_schema,
            writer,
            open_bytes,
        })
    }
}

type FilesBuilder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;
type FilesWriter =
    DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// The open data files of the next commit.
struct StagedFiles {
    /// The table's columns, which batches are aligned to.
    arrow_schema: arrow::datatypes::SchemaRef,
    writer: FileWriter,
    /// The Parquet bytes of the open files, kept up to date by their [`Counted`] writers.
    open_bytes: Arc<AtomicUsize>,
}

enum FileWriter {
    Plain(Box<Counted<FilesWriter>>),
    /// Rows split by partition, one rolling file per partition.
    Partitioned(
        Box<(
            FanoutWriter<Counted<FilesBuilder>>,
            RecordBatchPartitionSplitter,
        )>,
    ),
}

/// A data file writer (or its builder) that adds the size of its open file, flushed and in
/// progress, to a total shared by all the writers of one commit. iceberg-rust's fanout writer
/// keeps its writers to itself, so the count has to come from inside them.
struct Counted<W> {
    inner: W,
    open_bytes: Arc<AtomicUsize>,
    /// What this writer last added to `open_bytes`.
    counted: usize,
}

impl<W> Counted<W> {
    fn recount(&mut self, now: usize) {
        if now >= self.counted {
            self.open_bytes
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            self.open_bytes
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

#[async_trait]
impl IcebergWriterBuilder for Counted<FilesBuilder> {
    type R = Counted<FilesWriter>;

    async fn build(&self, partition_key: Option<PartitionKey>) -> iceberg::Result<Self::R> {
        Ok(Counted {
            inner: self.inner.build(partition_key).await?,
            open_bytes: self.open_bytes.clone(),
            counted: 0,
        })
    }
}

#[async_trait]
impl IcebergWriter for Counted<FilesWriter> {
    async fn write(&mut self, batch: RecordBatch) -> iceberg::Result<()> {
        self.inner.write(batch).await?;
        // After a write the writer has a file open (asking before the first one panics). A
        // rolled file is closed: the size starts again from the new file's.
        let now = self.inner.current_written_size();
        self.recount(now);
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<Vec<DataFile>> {
        self.recount(0);
        self.inner.close().await
    }
}

impl StagedFiles {
    async fn write(&mut self, batch: RecordBatch) -> iceberg::Result<()> {
        match &mut self.writer {
            FileWriter::Plain(w) => w.write(batch).await,
            FileWriter::Partitioned(parts) => {
                let (w, splitter) = parts.as_mut();
                for (key, rows) in splitter.split(&batch)? {
                    w.write(key, rows).await?;
                }
                Ok(())
            }
        }
    }

    async fn close(self) -> iceberg::Result<Vec<iceberg::spec::DataFile>> {
        match self.writer {
            FileWriter::Plain(mut w) => w.close().await,
            FileWriter::Partitioned(parts) => parts.0.close().await,
        }
    }
}

/// Whether `batch` writes a column of `table` as a wider type (see [`crate::schema::widens`]).
fn writes_wider(batch: &arrow::datatypes::Schema, table: &arrow::datatypes::Schema) -> bool {
    batch.fields().iter().any(|f| {
        table
            .field_with_name(f.name())
            .is_ok_and(|t| crate::schema::widens(t.data_type(), f.data_type()))
    })
}

/// The Iceberg type of an Arrow field, nested fields included (their ids are placeholders: the
/// schema change assigns fresh ones).
fn iceberg_type(field: &Field) -> iceberg::Result<iceberg::spec::Type> {
    let single = arrow::datatypes::Schema::new(vec![field.clone().with_nullable(true)]);
    let schema = arrow_schema_to_schema_auto_assign_ids(&single)?;
    schema
        .as_struct()
        .fields()
        .first()
        .map(|f| f.field_type.as_ref().clone())
        .ok_or_else(|| iceberg::Error::new(ErrorKind::DataInvalid, "an empty schema"))
}

/// The table's current schema as Arrow (with the field ids as metadata).
fn arrow_schema(table: &Table) -> iceberg::Result<arrow::datatypes::SchemaRef> {
    iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).map(Arc::new)
}

/// The Iceberg partition spec for `partition_by` over `schema` (see the module docs).
pub fn partition_spec(
    schema: &iceberg::spec::Schema,
    partition_by: &[Partition],
) -> Result<UnboundPartitionSpec, String> {
    use iceberg::spec::Transform as Iceberg;
    // REST catalogs want the spec id of a new table's spec spelled out.
    let mut builder = UnboundPartitionSpec::builder().with_spec_id(0);
    for p in partition_by {
        let column = crate::partition::column_name(p);
        let (source, name, transform) = match p.transform {
            Transform::Bucket(n) => (
                p.field.as_str(),
                format!("{}_bucket", p.field),
                Iceberg::Bucket(n),
            ),
            Transform::Truncate(n) => (
                p.field.as_str(),
                format!("{}_trunc", p.field),
                Iceberg::Truncate(n),
            ),
            _ => (column.as_str(), column.clone(), Iceberg::Identity),
        };
        let field = schema.field_by_name(source).ok_or_else(|| {
            format!("spec.table.partitionBy: the records have no top-level field {source:?} to partition by")
        })?;
        builder = builder
            .add_partition_field(field.id, name, transform)
            .map_err(|e| format!("spec.table.partitionBy: {e}"))?;
    }
    Ok(builder.build())
}

/// The table's sync points: from its properties, which every commit of ours sets together with
/// its snapshot; for a table last written before they were kept there, from the newest snapshot
/// that carries any in its summary (a snapshot written by another tool, such as a compaction,
/// carries none: its ancestors are searched).
pub fn table_sync_points(table: &Table, topic: &str) -> SyncPoints {
    let parse = |(k, v): (&String, &String)| -> Option<(i32, i64)> {
        Some((keys::iceberg_partition(k, topic)?, v.parse().ok()?))
    };
    let metadata = table.metadata();
    let kept: SyncPoints = metadata.properties().iter().filter_map(parse).collect();
    if !kept.is_empty() {
        return kept;
    }
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(s) = snapshot {
        let points: SyncPoints = s
            .summary()
            .additional_properties
            .iter()
            .filter_map(parse)
            .collect();
        if !points.is_empty() {
            return points;
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    SyncPoints::new()
}

/// A catalog that answers the reload before a commit with the table the commit was checked
/// against, and reports a refused commit as final (see the module docs).
#[derive(Debug)]
struct PinnedCatalog {
    inner: Arc<dyn Catalog>,
    pinned: Table,
}

#[async_trait]
impl Catalog for PinnedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table == self.pinned.identifier() {
            return Ok(self.pinned.clone());
        }
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.inner.update_table(commit).await.map_err(|e| {
            // A requirement that failed is a conflict (iceberg 0.10's requirement checks and
            // the SQL catalog's fenced update say so by kind), or the table was dropped
            // meanwhile (`TableNotFound`): either way the commit was refused as a whole.
            if matches!(
                e.kind(),
                ErrorKind::CatalogCommitConflicts | ErrorKind::TableNotFound
            ) {
                iceberg::Error::new(
                    ErrorKind::CatalogCommitConflicts,
                    format!("commit refused: {e}"),
                )
                .with_retryable(false)
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(type_: CatalogType, uri: &str, dir: &std::path::Path) -> CatalogConfig {
        CatalogConfig {
            type_,
            name: "c".into(),
            uri: uri.into(),
            warehouse: None,
            namespace: vec!["n".into()],
            table: "t".into(),
            token_file: Some(dir.join("token")),
            basic_auth: Some(kafkatable_crds::config::UserPasswordFiles {
                username_file: dir.join("username"),
                password_file: dir.join("password"),
            }),
        }
    }

    /// The catalog's username and password were read into the config and then ignored.
    #[test]
    fn catalog_logins_go_into_sql_uris_and_are_refused_elsewhere() {
        let dir = std::env::temp_dir().join(format!("kt-catalog-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        // A Secret with neither key is an error naming the field.
        let pg = catalog(CatalogType::Sql, "postgres://db:5432/lake", &dir);
        let none = catalog_credentials(&pg).expect_err("no keys");
        assert!(none.to_string().contains("credentialsSecretRef"), "{none}");
        std::fs::write(dir.join("username"), "lake\n").expect("write");
        std::fs::write(dir.join("password"), "p@ss").expect("write");
        let creds = catalog_credentials(&pg).expect("credentials");
        assert_eq!(
            creds,
            Some(Credentials::UserPassword("lake".into(), "p@ss".into()))
        );
        assert_eq!(
            sql_uri_with_login(&pg, "lake", "p@ss").expect("uri"),
            "postgres://lake:p%40ss@db:5432/lake"
        );
        let rest = catalog(CatalogType::Rest, "http://catalog:8181", &dir);
        let refused = sql_uri_with_login(&rest, "lake", "p@ss").expect_err("rest");
        assert!(refused.to_string().contains("bearer token"), "{refused}");
        let sqlite = catalog(CatalogType::Sql, "sqlite:///data/catalog.db", &dir);
        assert!(sql_uri_with_login(&sqlite, "lake", "p@ss").is_err());
        // A token wins.
        std::fs::write(dir.join("token"), "t0k3n").expect("write");
        assert_eq!(
            catalog_credentials(&rest).expect("token"),
            Some(Credentials::Token("t0k3n".into()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
