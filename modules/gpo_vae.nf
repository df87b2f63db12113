/*
 * gpo_vae: GPO-VAE (Baek et al., Bioinformatics 2025), a GRN-aligned perturbation VAE.
 * prepare (QC, strong perturbations, FC3 genes, split, OT control pairing) -> train (early
 * stopping on the validation loss) -> evaluate (ATE against both references, training-mean
 * baseline, CausalBench GRN statistics, reference-network precision/recall, exported GRN).
 * Optional files (summary statistics, reference networks) arrive as [] when not given. One tuple
 * per dataset (meta.dataset: replogle_rpe1, replogle_k562, adamson); prepare verifies checksums
 * and reads the reference networks before any work.
 */

process GPO_VAE_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-gpo_vae:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture/gpo_vae_fixture_qc_ot.h5ad'), path('fixture/bioeval'), emit: data
    path('fixture/truth.json'), emit: truth
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    gpo_vae.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture/bioeval
    touch fixture/gpo_vae_fixture_qc_ot.h5ad fixture/bioeval/biogrid.pkl fixture/truth.json
    """
}

process GPO_VAE_PREPARE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-gpo_vae:0.1.0'

    input:
    tuple val(meta), path(counts), path(summary_stats), path(reference_networks)

    output:
    tuple val(meta), path("${meta.id}_prepared.h5ad"), emit: prepared
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions
    tuple val("${task.process}"), val('pot'), eval('python -c "import ot; print(ot.__version__)"'), topic: versions, emit: versions_pot

    script:
    """
    gpo_vae.py prepare \\
        --input ${counts} \\
        --summary-stats '${summary_stats ?: ''}' \\
        --reference-networks '${reference_networks ?: ''}' \\
        --out ${meta.id}_prepared.h5ad \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    touch ${meta.id}_prepared.h5ad
    """
}

process GPO_VAE_TRAIN {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-gpo_vae:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path("${meta.id}_model.pt"), emit: model
    path("${meta.id}_model_history.tsv"), emit: history
    path("${meta.id}_model_summary.json"), emit: summary
    path('figures/*.png'), emit: figures
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch

    script:
    """
    gpo_vae.py train \\
        --prepared ${prepared} \\
        --out ${meta.id}_model.pt \\
        --figures-dir figures \\
        --threads ${task.cpus} \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p figures
    touch ${meta.id}_model.pt ${meta.id}_model_history.tsv ${meta.id}_model_summary.json figures/gpo_vae_${meta.dataset ?: meta.id}_training_curve.png
    """
}

process GPO_VAE_EVALUATE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-gpo_vae:0.1.0'

    input:
    tuple val(meta), path(prepared), path(model), path(reference_networks)

    output:
    path("${meta.id}/metrics.tsv"), emit: metrics
    path("${meta.id}/run_info.json"), emit: run_info
    path("${meta.id}/gpo_vae_metrics_mqc.tsv"), emit: mqc
    path("${meta.id}/figures/*.png"), emit: figures
    path("${meta.id}/grn_edges.tsv"), emit: grn_edges
    path("${meta.id}/grn_probabilities.npz"), emit: grn_probabilities
    path("${meta.id}/ate"), emit: ate
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch

    script:
    """
    gpo_vae.py evaluate \\
        --prepared ${prepared} \\
        --checkpoint ${model} \\
        --reference-networks '${reference_networks ?: ''}' \\
        --data-source ${meta.data_source} \\
        --outdir ${meta.id} \\
        --threads ${task.cpus} \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p ${meta.id}/figures ${meta.id}/ate
    touch ${meta.id}/metrics.tsv ${meta.id}/run_info.json ${meta.id}/gpo_vae_metrics_mqc.tsv ${meta.id}/grn_edges.tsv ${meta.id}/grn_probabilities.npz
    touch ${meta.id}/figures/gpo_vae_${meta.dataset ?: meta.id}_ate_scatter.png ${meta.id}/ate/model.tsv
    """
}

workflow GPO_VAE {
    take:
    ch_data // tuple(meta, counts h5ad, summary statistics or [], reference networks or [])

    main:
    GPO_VAE_PREPARE(ch_data)
    GPO_VAE_TRAIN(GPO_VAE_PREPARE.out.prepared)
    ch_evaluate = GPO_VAE_PREPARE.out.prepared
        .join(GPO_VAE_TRAIN.out.model)
        .join(ch_data.map { meta, counts, stats, refs -> [meta, refs] })
    GPO_VAE_EVALUATE(ch_evaluate)

    emit:
    metrics  = GPO_VAE_EVALUATE.out.metrics
    run_info = GPO_VAE_EVALUATE.out.run_info
    figures  = GPO_VAE_TRAIN.out.figures.mix(GPO_VAE_EVALUATE.out.figures.flatten())
    grn      = GPO_VAE_EVALUATE.out.grn_edges
}
