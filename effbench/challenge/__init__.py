"""The challenge's parts: suites, offline data staging, the HELM bridge and plugins, ranking, contamination."""
