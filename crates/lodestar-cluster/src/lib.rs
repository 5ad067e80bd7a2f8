//! Lodestar's Ballista scheduler and executor (`lodestar cluster scheduler|executor`,
//! docs/cluster.md): Ballista's own processes, given Lodestar's codecs
//! ([`lodestar_core::cluster`]), so that a node reopens the client's sources with the same
//! connectors and plugins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::error::{BallistaError, Result};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use lodestar_core::cluster::{LogicalCodec, PhysicalCodec, set_node_name};
use lodestar_core::model::ClusterUrl;

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen for clients and executors; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The host name executors and clients reach this scheduler by; the bound address by
    /// default.
    pub external_host: Option<String>,
    /// How long an executor may go without a heartbeat before its tasks are run elsewhere.
    pub executor_timeout_seconds: Option<u64>,
}

/// Runs a scheduler until the process is stopped. `listening` is called with the bound
/// address once clients can connect.
pub async fn run_scheduler(
    options: SchedulerOptions,
    listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(options.bind).await?;
    let local = listener.local_addr()?;
    let mut config = SchedulerConfig {
        bind_host: local.ip().to_string(),
        bind_port: local.port(),
        external_host: options
            .external_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string()),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..SchedulerConfig::default()
    };
    if let Some(seconds) = options.executor_timeout_seconds {
        config.executor_timeout_seconds = seconds;
        config.expire_dead_executor_interval_seconds = config
            .expire_dead_executor_interval_seconds
            .min(seconds.max(1));
    }
    set_node_name(format!("scheduler {}", config.scheduler_endpoint()));
    let config = Arc::new(config);
    config.validate()?;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::clone(&config)).await?;
    listening(local);
    start_grpc_service_with_listener(listener, scheduler).await
}

/// How to run an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler to register with.
    pub scheduler: ClusterUrl,
    /// The address to listen on.
    pub bind_host: String,
    /// The host name the scheduler, the other executors and clients reach this executor by;
    /// `bind_host` by default.
    pub external_host: Option<String>,
    /// Arrow Flight: where results and shuffle data are fetched from.
    pub port: u16,
    /// gRPC: where the scheduler sends tasks.
    pub grpc_port: u16,
    /// Tasks run at once; 0: one per core.
    pub concurrency: usize,
    /// Where shuffle files are written; a temporary directory by default.
    pub work_dir: Option<PathBuf>,
    /// Memory for the tasks' operators, split between them (beyond it they spill); `None`:
    /// Ballista's share of the machine.
    pub memory_limit: Option<u64>,
    /// How often the executor tells the scheduler it is alive.
    pub heartbeat_seconds: Option<u64>,
}

/// Runs an executor until the process is stopped (SIGTERM or Ctrl-C) or the scheduler
/// cannot be reached.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let external = options
        .external_host
        .clone()
        .unwrap_or_else(|| options.bind_host.clone());
    set_node_name(format!("executor {external}:{}", options.port));
    let mut config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: Some(external),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.host.clone(),
        scheduler_port: options.scheduler.port,
        vcores: options.concurrency,
        work_dir: options
            .work_dir
            .as_ref()
            .map(|dir| {
                dir.to_str().map(str::to_string).ok_or_else(|| {
                    BallistaError::Configuration(format!(
                        "the work directory {} is not UTF-8",
                        dir.display()
                    ))
                })
            })
            .transpose()?,
        memory_pool_size: options.memory_limit,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    if let Some(seconds) = options.heartbeat_seconds {
        config.executor_heartbeat_interval_seconds = seconds.max(1);
    }
    start_executor_process(Arc::new(config)).await
}
