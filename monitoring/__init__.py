"""Monitoring: data quality, drift, outcomes and fairness of published rounds, with a verdict.

The last room of the flow (features -> training -> serving -> monitoring). `ews monitor --round R`
(monitoring.cli) runs `monitoring.report.monitor_round` and writes EWS_HOME/monitoring/<round>/
report.json and report.html. Drift statistics are small pure functions registered by name in
`monitoring.stats` and chosen in `monitoring.config.MonitorConfig`. Nothing runs at import time.
"""
