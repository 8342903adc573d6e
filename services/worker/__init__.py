"""A worker node: a supervisor (`node`) running long-lived worker processes (`process`) that run jobs (`execution`).

`outage` rides out Redis outages, `reaper` finds jobs of dead nodes, `interrupts` handles timeouts and cancels;
every job state change goes through `shared.lifecycle`.
"""
