"""ijr's Hydra plugins: `sweeper` (hydra/sweeper=ijr_jobs, an explicit list of jobs;
ijr_grid, `ijr-train -m`'s grid with jobs named by their swept overrides) and `launchers`
(hydra/launcher=ijr_slurm, which returns once SLURM has queued the jobs, and ijr_local_parallel)."""


def register() -> None:
    """Store the plugins' configs and make their classes known to Hydra where its plugin scan cannot see them
    (an editable install maps the modules but not the `hydra_plugins` namespace); the entry points call this
    before Hydra composes anything."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ijr_plugins.launchers import LocalParallelLauncher, NonBlockingSlurmLauncher
    from hydra_plugins.ijr_plugins.sweeper import JobListSweeper, NamedGridSweeper

    plugins = Plugins.instance()
    for clazz in (JobListSweeper, NamedGridSweeper, NonBlockingSlurmLauncher, LocalParallelLauncher):
        if f"{clazz.__module__}.{clazz.__name__}" not in plugins.class_name_to_class:
            plugins.register(clazz)
