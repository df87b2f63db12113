/*
 * vcc: Virtual Cell Challenge 2025 student project (docs/studies/vcc.md).
 * prepare -> reference (DE of the real test cells, once) -> predict + evaluate per model -> summarise.
 * Every script is one call of bin/vcc.py; settings come from conf/modules/vcc.config (ext.args).
 */

process VCC_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture/vcc_fixture.h5ad'), path('fixture/ESM2_pert_features.pt'), path('fixture/test_genes.txt'), emit: data
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture
    touch fixture/vcc_fixture.h5ad fixture/ESM2_pert_features.pt fixture/test_genes.txt
    """
}

process VCC_PREPARE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(counts), path(test_genes)

    output:
    tuple val(meta), path('prepared'), emit: prepared
    tuple val("${task.process}"), val('scanpy'), eval('python -c "import scanpy; print(scanpy.__version__)"'), topic: versions, emit: versions_scanpy
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py prepare --input ${counts} --test-genes ${test_genes} --outdir prepared ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p prepared
    touch prepared/prepared.h5ad prepared/group_means.h5ad prepared/split.json prepared/split.tsv
    """
}

process VCC_REFERENCE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path('reference'), emit: reference
    tuple val("${task.process}"), val('cell-eval'), eval('python -c "from importlib.metadata import version; print(version(\'cell-eval\'))"'), topic: versions, emit: versions_cell_eval
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py reference --prepared ${prepared} --outdir reference --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p reference
    touch reference/real_stats.npz reference/real_pdex.parquet reference/reference.json
    """
}

process VCC_PREDICT {
    tag "${meta.id}:${model}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared), val(model), path(features)

    output:
    tuple val(meta), val(model), path("predictions/${model}_pred.h5ad"), path("predictions/${model}_model.json"), emit: predictions
    tuple val("${task.process}"), val('scikit-learn'), eval('python -c "import sklearn; print(sklearn.__version__)"'), topic: versions, emit: versions_sklearn
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // Without an embeddings file `features` is an empty list: `--features ''` selects the fallback features.
    // (STATE / scGPT, issue 3, get their own GPU processes.)
    """
    vcc.py predict --prepared ${prepared} --model ${model} --features '${features ?: ''}' --outdir predictions --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p predictions
    touch predictions/${model}_pred.h5ad predictions/${model}_model.json
    """
}

process VCC_EVALUATE {
    tag "${meta.id}:${model}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), val(model), path(predictions), path(model_info), path(prepared), path(reference)

    output:
    tuple val(meta), path("evaluations/${model}_*"), emit: evaluation
    tuple val("${task.process}"), val('cell-eval'), eval('python -c "from importlib.metadata import version; print(version(\'cell-eval\'))"'), topic: versions, emit: versions_cell_eval
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py evaluate --prepared ${prepared} --reference ${reference} --predictions ${predictions} --model ${model} --outdir evaluations --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p evaluations
    touch evaluations/${model}_eval.json evaluations/${model}_per_perturbation.tsv evaluations/${model}_cell_eval_agg.csv
    """
}

process VCC_SUMMARISE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(evaluations, stageAs: 'evaluations/*')
    val(models)
    val(data_source)

    output:
    path('vcc/metrics.tsv'), emit: metrics
    path('vcc/run_info.json'), emit: run_info
    path('vcc/vcc_*.png'), emit: figures
    path('vcc/vcc_metrics_mqc.tsv'), emit: mqc
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py summarise --evaluations evaluations --models ${models} --data-source ${data_source} --outdir vcc ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p vcc
    touch vcc/metrics.tsv vcc/run_info.json vcc/vcc_metrics_vs_published.png vcc/vcc_pds_rank_heatmap.png vcc/vcc_metrics_mqc.tsv
    """
}

workflow VCC {
    take:
    ch_data      // [meta, counts h5ad, ESM2 .pt or [], test genes file]
    models       // list of model names
    data_source  // 'fixture' or 'provided'

    main:
    VCC_PREPARE(ch_data.map { meta, counts, features, test_genes -> [meta, counts, test_genes] })
    VCC_REFERENCE(VCC_PREPARE.out.prepared)

    ch_predict = VCC_PREPARE.out.prepared
        .join(ch_data.map { meta, counts, features, test_genes -> [meta, features] })
        .combine(channel.fromList(models))
        .map { meta, prepared, features, model -> [meta, prepared, model, features] }
    VCC_PREDICT(ch_predict)

    ch_evaluate = VCC_PREDICT.out.predictions
        .combine(VCC_PREPARE.out.prepared.join(VCC_REFERENCE.out.reference), by: 0)
    VCC_EVALUATE(ch_evaluate)

    ch_evaluations = VCC_EVALUATE.out.evaluation
        .groupTuple()
        .map { meta, files -> [meta, files.flatten()] }
    VCC_SUMMARISE(ch_evaluations, models.join(','), data_source)

    emit:
    metrics  = VCC_SUMMARISE.out.metrics
    run_info = VCC_SUMMARISE.out.run_info
    figures  = VCC_SUMMARISE.out.figures
}
