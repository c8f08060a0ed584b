# Run specifications (docs/run_spec.md): one run_spec.json per run, resolved by the packages' spec builders from
# the validated config and written before the run's first job. Local rules: cheap, and they read nothing remote.
# A changed setting changes the rule's params, so Snakemake rewrites the spec and reruns what depends on it.
localrules:
    run_spec,
    sr_run_spec,


rule run_spec:
    input:
        train=f"{R}/data/{{dataset}}/partition/train.json",
    output:
        f"{R}/{{dataset}}/{{degradation}}/{{method}}/seed{{seed}}/run_spec.json",
    params:
        # what the spec holds (num_classes comes from the partition at run time): a change reruns this rule
        spec=lambda wc: json.dumps(method_spec(wc.dataset, wc.degradation, wc.method, wc.seed), sort_keys=True),
    log:
        "logs/runspec/{dataset}/{degradation}/{method}/seed{seed}.log",
    run:
        names = partition_classes(input.train)
        write_spec(output[0], method_spec(wildcards.dataset, wildcards.degradation, wildcards.method, wildcards.seed,
                                          num_classes=len(names), class_names=names))


rule sr_run_spec:
    output:
        f"{R}/{{dataset}}/{{degradation}}/sr/{{sr_model}}/seed{{seed}}/run_spec.json",
    params:
        spec=lambda wc: json.dumps(sr_spec(wc.dataset, wc.degradation, wc.sr_model, wc.seed), sort_keys=True),
    log:
        "logs/runspec/{dataset}/{degradation}/sr_{sr_model}/seed{seed}.log",
    run:
        write_spec(output[0], sr_spec(wildcards.dataset, wildcards.degradation, wildcards.sr_model, wildcards.seed))
