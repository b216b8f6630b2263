//! `provision`: create the session table, or bring an existing one to the
//! shape this version needs, and check it.
//!
//! The shape: key `sid` (B), GSI `uid-index` on `uid`, GSI `journal-index`
//! on (`jb`, `jt`) for the change journal, a stream (NEW_AND_OLD_IMAGES),
//! TTL on `exp`. A table made by an earlier version, without the journal's
//! index, gets it added (`UpdateTable`; DynamoDB backfills it while the
//! table stays in use).

use std::time::Duration;

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableDescription, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::{DynamoTier, ProvisionReport, UID_INDEX};
use crate::error::{classify, DynamoError, ErrorKind};
use crate::item;
use crate::journal::{self, JOURNAL_INDEX};
use crate::table::describe;

impl DynamoTier {
    /// Create the table (key `sid`, GSI `uid-index`, stream NEW_AND_OLD_IMAGES,
    /// TTL on `exp`) or check that an existing one has that shape. Idempotent.
    pub async fn provision(&self) -> Result<ProvisionReport, DynamoError> {
        let op = "provision";
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def(item::SID, ScalarAttributeType::B)?)
            .attribute_definitions(attr_def(item::UID, ScalarAttributeType::S)?)
            .attribute_definitions(attr_def(journal::BUCKET, ScalarAttributeType::S)?)
            .attribute_definitions(attr_def(journal::STAMP, ScalarAttributeType::N)?)
            .key_schema(hash_key(item::SID)?)
            .global_secondary_indexes(uid_index()?)
            .global_secondary_indexes(journal_index()?)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?,
            )
            .send()
            .await
        {
            Ok(_) => true,
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(CreateTableError::ResourceInUseException(_))
                ) =>
            {
                false
            }
            Err(err) => return Err(classify(op, &err)),
        };
        self.wait_active().await?;
        let added_journal = self.add_journal_index().await?;
        self.check_shape().await?;
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|err| classify(op, &err))?;
        let ttl_on = ttl.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(item::EXP)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if !ttl_on {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(item::EXP)
                        .build()
                        .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?,
                )
                .send()
                .await
                .map_err(|err| classify(op, &err))?;
        }
        Ok(ProvisionReport {
            created,
            journal_index_added: added_journal,
            ttl_enabled: !ttl_on,
        })
    }

    async fn wait_active(&self) -> Result<(), DynamoError> {
        self.wait_until("table", Duration::from_secs(120), |table| {
            table.table_status() == Some(&TableStatus::Active)
        })
        .await
    }

    /// Describe the table every 200 ms until `ready` says so, for at most
    /// `within`; then an `Unavailable` error naming `what`.
    async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        ready: impl Fn(&TableDescription) -> bool,
    ) -> Result<(), DynamoError> {
        let op = "provision";
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if ready(&describe(&self.client, &self.table, op).await?) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(DynamoError::new(
            op,
            ErrorKind::Unavailable,
            format!("{what} did not become ACTIVE within {} s", within.as_secs()),
        ))
    }

    /// An existing table must have the key, the GSI and a stream we can follow.
    async fn check_shape(&self) -> Result<(), DynamoError> {
        let op = "provision";
        let table = describe(&self.client, &self.table, op).await?;
        let mut problems = Vec::new();
        let key_ok = table.key_schema().len() == 1
            && table.key_schema()[0].attribute_name() == item::SID
            && table.key_schema()[0].key_type() == &KeyType::Hash;
        if !key_ok {
            problems.push("partition key must be `sid` (B) with no sort key".to_owned());
        }
        let sid_binary = table.attribute_definitions().iter().any(|d| {
            d.attribute_name() == item::SID && d.attribute_type() == &ScalarAttributeType::B
        });
        if !sid_binary {
            problems.push("`sid` must be of type B".to_owned());
        }
        let gsi_ok = table.global_secondary_indexes().iter().any(|g| {
            g.index_name() == Some(UID_INDEX)
                && g.key_schema().first().map(|k| k.attribute_name()) == Some(item::UID)
        });
        if !gsi_ok {
            problems.push(format!("GSI `{UID_INDEX}` on `uid` is missing"));
        }
        let journal_ok = table.global_secondary_indexes().iter().any(|g| {
            let keys: Vec<_> = g.key_schema().iter().map(|k| k.attribute_name()).collect();
            g.index_name() == Some(JOURNAL_INDEX) && keys == [journal::BUCKET, journal::STAMP]
        });
        if !journal_ok {
            problems.push(format!(
                "GSI `{JOURNAL_INDEX}` on (`{}`, `{}`) is missing",
                journal::BUCKET,
                journal::STAMP
            ));
        }
        let stream_ok = table
            .stream_specification()
            .is_some_and(|s| s.stream_enabled());
        if !stream_ok {
            problems.push(
                "the table's stream is not enabled (NEW_AND_OLD_IMAGES or KEYS_ONLY)".to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DynamoError::new(
                op,
                ErrorKind::Rejected,
                format!(
                    "table `{}` exists with the wrong shape: {}",
                    self.table,
                    problems.join("; ")
                ),
            ))
        }
    }

    /// Add `journal-index` to a table made without it, and wait until it is
    /// usable. `false` when it was there already.
    async fn add_journal_index(&self) -> Result<bool, DynamoError> {
        let op = "provision";
        let table = describe(&self.client, &self.table, op).await?;
        if table
            .global_secondary_indexes()
            .iter()
            .any(|g| g.index_name() == Some(JOURNAL_INDEX))
        {
            return Ok(false);
        }
        let index = journal_index()?;
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(JOURNAL_INDEX)
            .set_key_schema(Some(index.key_schema().to_vec()))
            .set_projection(index.projection().cloned())
            .build()
            .map_err(|e| DynamoError::new(op, ErrorKind::Rejected, e.to_string()))?;
        tracing::info!(table = %self.table, "adding the change journal's index `{JOURNAL_INDEX}`");
        self.client
            .update_table()
            .table_name(&self.table)
            .attribute_definitions(attr_def(journal::BUCKET, ScalarAttributeType::S)?)
            .attribute_definitions(attr_def(journal::STAMP, ScalarAttributeType::N)?)
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(|err| classify(op, &err))?;
        let index_active = |table: &TableDescription| {
            table.global_secondary_indexes().iter().any(|g| {
                g.index_name() == Some(JOURNAL_INDEX)
                    && g.index_status() == Some(&IndexStatus::Active)
            })
        };
        self.wait_until("the journal index", Duration::from_secs(600), index_active)
            .await?;
        Ok(true)
    }
}

fn uid_index() -> Result<GlobalSecondaryIndex, DynamoError> {
    index(UID_INDEX, vec![hash_key(item::UID)?])
}

fn journal_index() -> Result<GlobalSecondaryIndex, DynamoError> {
    index(
        JOURNAL_INDEX,
        vec![hash_key(journal::BUCKET)?, range_key(journal::STAMP)?],
    )
}

fn index(name: &str, keys: Vec<KeySchemaElement>) -> Result<GlobalSecondaryIndex, DynamoError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(keys))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}

fn attr_def(name: &str, ty: ScalarAttributeType) -> Result<AttributeDefinition, DynamoError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}

fn hash_key(name: &str) -> Result<KeySchemaElement, DynamoError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}

fn range_key(name: &str) -> Result<KeySchemaElement, DynamoError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Range)
        .build()
        .map_err(|e| DynamoError::new("provision", ErrorKind::Rejected, e.to_string()))
}
