"""A worker node: a supervisor (`node`) running long-lived worker processes (`process`) that execute jobs (`execution`)."""
