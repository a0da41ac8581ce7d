"""One module per figure, each with `measure(run)`; profiles holds figure 4's untimed aids."""

from . import command_jobs, fair, first_page, latency, lifecycle, rates, scale, schedules, throughput, workflows

# The figures by name, in the order a run measures them (`--only` picks some).
MEASURE = {
    "lifecycle": lifecycle.measure,
    "throughput": throughput.measure,
    "scale": scale.measure,
    "first_page": first_page.measure,
    "latency": latency.measure,
    "command_jobs": command_jobs.measure,
    "schedules": schedules.measure,
    "fair": fair.measure,
    "workflows": workflows.measure,
    "rates": rates.measure,
}
