/*
 * drugseq: DRUGseq-PerturbFormer, the multi-task Transformer on metabolite DRUG-seq of T cells
 * (docs/studies/drugseq.md). prepare (validate the CSV set or one h5ad) -> train -> analyse.
 * Every script is one call of bin/drugseq.py; settings come from conf/modules/drugseq.config.
 */

process DRUGSEQ_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-drugseq:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture'), emit: data
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    drugseq.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture
    touch fixture/expr_mat.csv fixture/scores_3_z.csv fixture/labels_cls.csv fixture/meta_id.csv fixture/well_id.csv \\
        fixture/activation_score_old.csv fixture/cluster_id.csv fixture/truth.json
    """
}

process DRUGSEQ_PREPARE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-drugseq:0.1.0'

    input:
    // A folder of the original CSVs and/or single files, or one h5ad; absent inputs are [].
    tuple val(meta), path(data_dir, stageAs: 'data_dir/*'), path(h5ad, stageAs: 'h5ad/*'), path(expr, stageAs: 'expr/*'), path(scores, stageAs: 'scores/*'), path(labels, stageAs: 'labels/*'), path(meta_ids, stageAs: 'meta/*'), path(wells, stageAs: 'wells/*'), path(legacy, stageAs: 'legacy/*'), path(clusters, stageAs: 'clusters/*')
    val(data_source)

    output:
    tuple val(meta), path('prepared.h5ad'), emit: prepared
    tuple val("${task.process}"), val('anndata'), eval('python -c "import anndata; print(anndata.__version__)"'), topic: versions, emit: versions_anndata
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // Empty strings mean "not given": bin/drugseq.py prepare ignores them.
    """
    drugseq.py prepare --data-dir '${data_dir ?: ''}' --h5ad '${h5ad ?: ''}' --expr '${expr ?: ''}' --scores '${scores ?: ''}' --labels '${labels ?: ''}' --meta '${meta_ids ?: ''}' --wells '${wells ?: ''}' --legacy-score '${legacy ?: ''}' --clusters '${clusters ?: ''}' --data-source ${data_source} --out prepared.h5ad ${task.ext.args ?: ''}
    """

    stub:
    """
    touch prepared.h5ad
    """
}

process DRUGSEQ_TRAIN {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-drugseq:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path('model'), emit: model
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    drugseq.py train --prepared ${prepared} --out model --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p model
    touch model/model_best.pt model/model_last.pt model/config.json model/history_loss_detailed.csv model/split.csv
    """
}

process DRUGSEQ_ANALYSE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-drugseq:0.1.0'

    input:
    tuple val(meta), path(prepared), path(model)

    output:
    path('drugseq/metrics.tsv'), emit: metrics
    path('drugseq/run_info.json'), emit: run_info
    path('drugseq/figures/drugseq_*.png'), emit: figures
    path('drugseq/*.csv'), emit: tables
    path('drugseq/drugseq_metrics_mqc.tsv'), emit: mqc
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    drugseq.py analyse --prepared ${prepared} --model ${model} --outdir drugseq --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p drugseq/figures
    touch drugseq/metrics.tsv drugseq/run_info.json drugseq/drugseq_metrics_mqc.tsv drugseq/well_predictions_results.csv \\
        drugseq/gene_importance_gradinput.csv drugseq/metabolite_dmso_distance.csv
    touch drugseq/figures/drugseq_loss_curves.png drugseq/figures/drugseq_latent_pca.png \\
        drugseq/figures/drugseq_top_metabolites.png drugseq/figures/drugseq_top_genes.png
    """
}

workflow DRUGSEQ {
    take:
    ch_data      // [meta, data_dir, h5ad, expr, scores, labels, meta_ids, wells, legacy, clusters]; absent inputs are []
    data_source  // 'fixture' or 'provided'

    main:
    DRUGSEQ_PREPARE(ch_data, data_source)
    DRUGSEQ_TRAIN(DRUGSEQ_PREPARE.out.prepared)
    DRUGSEQ_ANALYSE(DRUGSEQ_PREPARE.out.prepared.join(DRUGSEQ_TRAIN.out.model))

    emit:
    metrics  = DRUGSEQ_ANALYSE.out.metrics
    run_info = DRUGSEQ_ANALYSE.out.run_info
    figures  = DRUGSEQ_ANALYSE.out.figures
}
