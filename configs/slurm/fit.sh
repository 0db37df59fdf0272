# The body of fit_cpu.sbatch and fit_gpu.sbatch: one process per device, the run in a folder of
# its own job's (lightning_logs/slurm-JOBID/version_0) that a requeued job continues from its
# last.ckpt. SIGTERM (the time limit near, `scancel --signal TERM`, a preemption) makes fit save
# last.ckpt and exit with 143; the job is then queued again.
runs="lightning_logs/slurm-$SLURM_JOB_ID"
resume=()
if compgen -G "$runs/version_*/checkpoints/last.ckpt" > /dev/null; then
    resume=(--ckpt_path last)
    echo "Continuing $runs from its last.ckpt (restart ${SLURM_RESTART_COUNT:-0})"
fi
srun python -m mnist_lit fit --trainer.logger.init_args.name "$runs" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy ddp \
    --trainer.devices "$SLURM_NTASKS_PER_NODE" --trainer.num_nodes "$SLURM_JOB_NUM_NODES" \
    "$@" "${resume[@]}"
status=$?
if [ "$status" -eq 143 ]; then
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
