"""Vigie under one installed name: the daemon, probes, shared core and demo lab as `vigie.*`.

The repository keeps its top-level folders (`monitor/`, `probes/`, `core/`, `lab/`); `vigie/`
links them under one name, so an install never puts generic packages such as `monitor` or
`probes` into site-packages and no module is ever loaded under two names.
"""
