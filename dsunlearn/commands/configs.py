"""`dsunlearn configs`: list the shipped experiment configs, each with its objective's effective hyper-parameters."""

NAME = "configs"
HELP = "list the shipped experiment configs (usable as --config NAME) and their objectives' hyper-parameters"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    from dsunlearn.config_io import SHIPPED_DIR, load_config, shipped_configs

    for name in shipped_configs():
        first = (SHIPPED_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        o = load_config(name).objective  # params resolved: the signature's defaults unless the config sets them
        params = "".join(f" {k}={v}" for k, v in o.params.items())
        print(f"{name:32s} {first}  [{o.name}{params}]")
    return 0
