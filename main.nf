#!/usr/bin/env nextflow
/*
 * txrepro: re-runs published transcriptome-AI studies in pinned containers and ends in one report
 * that puts every reproduced number beside the published one, with a verdict.
 *
 *     nextflow run . -profile gpu,docker --study all --outdir results -params-file my_data.yml
 *
 * Params are read here only and passed into the study workflows (conf/modules/*.config closures
 * excepted, for ext.args). Each study is one module: modules/<study>.nf.
 */

include { validateParameters; paramsSummaryLog } from 'plugin/nf-schema'
include { REPORT; STUDY_NOT_COMPUTED } from './modules/report'
include { AGE_CLOCK; AGE_CLOCK_FIXTURE } from './modules/age_clock'
include { SAGE_NET; SAGE_NET_FIXTURE } from './modules/sage_net'
include { DRUGSEQ; DRUGSEQ_FIXTURE } from './modules/drugseq'
include { GPO_VAE; GPO_VAE_FIXTURE } from './modules/gpo_vae'
include { VCC; VCC_FIXTURE; VCC_SUPPORT_SET; VCC_SCORE } from './modules/vcc'

// Under the strict syntax a command-line `--flag false` arrives as the string 'false', which
// Groovy treats as true. Every boolean param goes through this one function.
def asBoolean(String name, Object value) {
    if (value instanceof Boolean) {
        return value
    }
    def text = value == null ? '' : value.toString().trim().toLowerCase()
    if (text in ['true', 'yes', '1']) {
        return true
    }
    if (text in ['false', 'no', '0', '', 'null']) {
        return false
    }
    error("Parameter --${name} must be true or false, got '${value}'")
}

// An optional input file or folder given as a param, or [] (an absent optional input) when unset.
def optionalFile(Object path) {
    return path ? file(path.toString(), checkIfExists: true) : []
}

// The index beside a VCF or FASTA (.tbi/.csi, .fai) when there is one, else [] (the task indexes).
def indexBeside(Object path, List suffixes) {
    def hit = suffixes.collect { suffix -> file("${path}${suffix}") }.find { f -> f.exists() }
    return hit ?: []
}

// 'all' or a comma list of study ids. Naming a study that is not implemented is an error;
// with 'all', unimplemented studies are skipped with a warning.
def selectStudies(String selection, List known, List implemented) {
    def wanted = selection == 'all' ? known : selection.tokenize(',').collect { s -> s.trim() }.findAll { s -> s }
    def unknown = wanted.findAll { s -> !(s in known) }
    if (unknown) {
        error("Unknown study '${unknown[0]}' in --study: expected 'all' or a comma list of ${known.join(', ')}")
    }
    def missing = wanted.findAll { s -> !(s in implemented) }
    if (missing && selection != 'all') {
        error("Study '${missing[0]}' is not implemented in this version of txrepro (implemented: ${implemented ? implemented.join(', ') : 'none'})")
    }
    if (missing) {
        log.warn("Not implemented in this version, skipped: ${missing.join(', ')}")
    }
    return wanted.findAll { s -> s in implemented }
}

workflow {
    main:
    if (asBoolean('validate_params', params.validate_params)) {
        validateParameters()
    }
    log.info(paramsSummaryLog(workflow))

    def known = ['age_clock', 'gpo_vae', 'vcc', 'sage_net', 'drugseq']
    def implemented = ['age_clock', 'gpo_vae', 'vcc', 'sage_net', 'drugseq']
    def studies = selectStudies(params.study.toString(), known, implemented)
    def use_fixtures = asBoolean('use_fixtures', params.use_fixtures)

    ch_metrics  = channel.empty()
    ch_run_info = channel.empty()
    ch_figures  = channel.empty()
    ch_missing  = channel.empty()

    // Study blocks (one per implemented study): run the study workflow on the given data, on
    // its fixture with --use_fixtures, or report it as not computed when no data is given.

    if ('age_clock' in studies) {
        def age_clock_given = params.age_clock_input && params.age_clock_checkpoint
        if (age_clock_given || use_fixtures) {
            def age_clock_reference = params.age_clock_reference_genes
                ? params.age_clock_reference_genes.toString().tokenize(',').collect { f -> file(f.trim(), checkIfExists: true) }
                : []
            def ch_age_clock = age_clock_given
                ? channel.of([[id: 'age_clock'], file(params.age_clock_input, checkIfExists: true), file(params.age_clock_checkpoint, checkIfExists: true, type: 'dir'), age_clock_reference])
                : AGE_CLOCK_FIXTURE(channel.of([id: 'age_clock'])).data
            AGE_CLOCK(
                ch_age_clock,
                params.age_clock_protocol.toString().tokenize(',').collect { p -> p.trim() },
                [file(params.age_clock_degs, checkIfExists: true), file(params.age_clock_age_genes, checkIfExists: true)],
                age_clock_given ? 'provided' : 'fixture',
            )
            ch_metrics  = ch_metrics.mix(AGE_CLOCK.out.metrics)
            ch_run_info = ch_run_info.mix(AGE_CLOCK.out.run_info)
            ch_figures  = ch_figures.mix(AGE_CLOCK.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('age_clock'))
        }
    }

    if ('gpo_vae' in studies) {
        // The paper's three datasets (Table 2), each with its own params, plus the single-input form
        // (gpo_vae_input keyed by gpo_vae_dataset). Datasets without data are reported as
        // `not computed: data not provided` by the first dataset's evaluation.
        def gpo_vae_given = [
            [dataset: 'replogle_rpe1', input: params.gpo_vae_rpe1_input, stats: params.gpo_vae_rpe1_summary_stats, sheet: params.gpo_vae_rpe1_summary_sheet, checksum: params.gpo_vae_rpe1_input_checksum],
            [dataset: 'replogle_k562', input: params.gpo_vae_k562_input, stats: params.gpo_vae_k562_summary_stats, sheet: params.gpo_vae_k562_summary_sheet, checksum: params.gpo_vae_k562_input_checksum],
            [dataset: 'adamson', input: params.gpo_vae_adamson_input, stats: params.gpo_vae_adamson_summary_stats, sheet: params.gpo_vae_adamson_summary_sheet, checksum: params.gpo_vae_adamson_input_checksum],
            [dataset: params.gpo_vae_dataset.toString(), input: params.gpo_vae_input, stats: params.gpo_vae_summary_stats, sheet: params.gpo_vae_summary_sheet, checksum: params.gpo_vae_input_checksum],
        ].findAll { d -> d.input }
        def gpo_vae_repeated = gpo_vae_given.countBy { d -> d.dataset }.findAll { ds, n -> n > 1 }.keySet()
        if (gpo_vae_repeated) {
            error("gpo_vae dataset ${gpo_vae_repeated[0]} given twice: use either --gpo_vae_input with --gpo_vae_dataset or the per-dataset --gpo_vae_<rpe1|k562|adamson>_input, not both")
        }
        if (gpo_vae_given || use_fixtures) {
            def gpo_vae_missing = ['replogle_rpe1', 'replogle_k562', 'adamson'] - gpo_vae_given.collect { d -> d.dataset }
            // one shape for both: (meta, counts h5ad, summary statistics or [], reference networks or [])
            def ch_gpo_vae = gpo_vae_given
                ? channel.fromList(gpo_vae_given.withIndex().collect { d, i ->
                    [
                        [id: d.dataset, dataset: d.dataset, data_source: 'provided', summary_sheet: d.sheet ?: '', input_checksum: d.checksum ?: '',
                         not_provided: i == 0 ? gpo_vae_missing.join(',') : ''],
                        file(d.input, checkIfExists: true),
                        optionalFile(d.stats),
                        optionalFile(params.gpo_vae_reference_networks),
                    ]
                })
                : GPO_VAE_FIXTURE(channel.of([id: params.gpo_vae_dataset.toString(), dataset: params.gpo_vae_dataset.toString(), data_source: 'fixture'])).data
                    .map { meta, counts, refs -> [meta, counts, [], refs] }
            GPO_VAE(ch_gpo_vae)
            ch_metrics  = ch_metrics.mix(GPO_VAE.out.metrics)
            ch_run_info = ch_run_info.mix(GPO_VAE.out.run_info)
            ch_figures  = ch_figures.mix(GPO_VAE.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('gpo_vae'))
        }
    }

    if ('vcc' in studies) {
        if (params.vcc_input || use_fixtures) {
            def ch_vcc = params.vcc_input
                ? channel.of([
                    [id: 'vcc'],
                    file(params.vcc_input, checkIfExists: true),
                    params.vcc_features ? file(params.vcc_features, checkIfExists: true) : [],
                    file(params.vcc_test_genes, checkIfExists: true),
                ])
                : VCC_FIXTURE(channel.of([id: 'vcc'])).data
            if (params.vcc_support_set) {
                // the support set's checksum is verified and its ESM2 features replace the features slot
                if (params.vcc_features) {
                    error("Give --vcc_features or --vcc_support_set, not both (the support set holds the features file)")
                }
                VCC_SUPPORT_SET(channel.of([[id: 'vcc'], file(params.vcc_support_set, checkIfExists: true)]))
                ch_vcc = ch_vcc.join(VCC_SUPPORT_SET.out.features)
                    .map { meta, counts, _features, test_genes, support_features -> [meta, counts, support_features, test_genes] }
            }
            def vcc_scgpt_checkpoint = optionalFile(params.vcc_scgpt_checkpoint)
            def vcc_scgpt_runnable = params.vcc_scgpt_checkpoint || asBoolean('vcc_scgpt_allow_random_init', params.vcc_scgpt_allow_random_init)
            VCC(ch_vcc, params.vcc_models.toString().tokenize(',').collect { m -> m.trim() }, params.vcc_input ? 'provided' : 'fixture',
                vcc_scgpt_checkpoint, vcc_scgpt_runnable)
            ch_metrics  = ch_metrics.mix(VCC.out.metrics)
            ch_run_info = ch_run_info.mix(VCC.out.run_info)
            ch_figures  = ch_figures.mix(VCC.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('vcc'))
        }
    }
    if (params.vcc_score_pred || params.vcc_score_real) {
        // vcc score mode: published under <outdir>/vcc/score (docs/studies/vcc.md, "Scoring your own predictions")
        if (!(params.vcc_score_pred && params.vcc_score_real)) {
            error("Score mode needs both --vcc_score_real and --vcc_score_pred")
        }
        VCC_SCORE(channel.of([
            [id: 'vcc_score'],
            file(params.vcc_score_real, checkIfExists: true),
            file(params.vcc_score_pred, checkIfExists: true),
            optionalFile(params.vcc_score_baseline),
        ]))
    }

    if ('sage_net' in studies) {
        if (params.sage_net_vcf || use_fixtures) {
            def main_meta = [
                id: 'sage_net_main', role: 'main', cohort: params.sage_net_cohort.toString(),
                expression_is_adjusted: asBoolean('sage_net_expression_is_adjusted', params.sage_net_expression_is_adjusted),
            ]
            def external_meta = [id: 'sage_net_external', role: 'external', cohort: params.sage_net_external_cohort.toString(), expression_is_adjusted: true]
            def ch_sage_cohorts = channel.empty()
            def ch_sage_reference = channel.empty()
            if (params.sage_net_vcf) {
                ch_sage_cohorts = channel.of([
                    main_meta, file(params.sage_net_vcf, checkIfExists: true), indexBeside(params.sage_net_vcf, ['.tbi', '.csi']),
                    file(params.sage_net_genes, checkIfExists: true), file(params.sage_net_expression, checkIfExists: true),
                    optionalFile(params.sage_net_covariates), optionalFile(params.sage_net_train_samples),
                    optionalFile(params.sage_net_val_samples), optionalFile(params.sage_net_test_samples), [],
                ])
                if (params.sage_net_external_vcf) {
                    ch_sage_cohorts = ch_sage_cohorts.mix(channel.of([
                        external_meta, file(params.sage_net_external_vcf, checkIfExists: true), indexBeside(params.sage_net_external_vcf, ['.tbi', '.csi']),
                        file(params.sage_net_genes, checkIfExists: true), file(params.sage_net_external_expression, checkIfExists: true),
                        [], [], [], [], optionalFile(params.sage_net_external_samples),
                    ]))
                }
                ch_sage_reference = channel.value([file(params.sage_net_fasta, checkIfExists: true), indexBeside(params.sage_net_fasta, ['.fai'])])
            } else {
                // the fixture starts from TPM + known covariates, so the preprocessing step runs too
                SAGE_NET_FIXTURE(channel.of([id: 'sage_net']))
                ch_sage_cohorts = SAGE_NET_FIXTURE.out.main
                    .map { meta, vcf, tbi, genes, tpm, cov, train, val, test -> [main_meta + [expression_is_adjusted: false], vcf, tbi, genes, tpm, cov, train, val, test, []] }
                    .mix(SAGE_NET_FIXTURE.out.external.map { meta, vcf, tbi, genes, expr, samples -> [external_meta, vcf, tbi, genes, expr, [], [], [], [], samples] })
                ch_sage_reference = SAGE_NET_FIXTURE.out.reference
            }
            def ch_sage_genes = channel.value([optionalFile(params.sage_net_train_genes), optionalFile(params.sage_net_val_genes), optionalFile(params.sage_net_test_genes)])
            SAGE_NET(ch_sage_cohorts, ch_sage_reference, ch_sage_genes, params.sage_net_vcf ? 'provided' : 'fixture')
            ch_metrics  = ch_metrics.mix(SAGE_NET.out.metrics)
            ch_run_info = ch_run_info.mix(SAGE_NET.out.run_info)
            ch_figures  = ch_figures.mix(SAGE_NET.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('sage_net'))
        }
    }

    if ('drugseq' in studies) {
        def drugseq_inputs = [
            params.drugseq_data_dir, params.drugseq_h5ad, params.drugseq_expr, params.drugseq_scores, params.drugseq_labels,
            params.drugseq_meta, params.drugseq_wells, params.drugseq_legacy_score, params.drugseq_clusters
        ]
        def drugseq_given = drugseq_inputs.any { value -> value }
        if (drugseq_given || use_fixtures) {
            def ch_drugseq = drugseq_given
                ? channel.of([[id: 'drugseq']] + drugseq_inputs.collect { value -> optionalFile(value) })
                : DRUGSEQ_FIXTURE(channel.of([id: 'drugseq'])).data.map { meta, dir -> [meta, dir, [], [], [], [], [], [], [], []] }
            DRUGSEQ(ch_drugseq, drugseq_given ? 'provided' : 'fixture')
            ch_metrics  = ch_metrics.mix(DRUGSEQ.out.metrics)
            ch_run_info = ch_run_info.mix(DRUGSEQ.out.run_info)
            ch_figures  = ch_figures.mix(DRUGSEQ.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('drugseq'))
        }
    }

    // Studies without data: every published number becomes `not computed: data not provided`.
    STUDY_NOT_COMPUTED(ch_missing)
    ch_metrics  = ch_metrics.mix(STUDY_NOT_COMPUTED.out.metrics)
    ch_run_info = ch_run_info.mix(STUDY_NOT_COMPUTED.out.run_info)

    // One line per process and tool, for the report's software-versions section.
    ch_versions = channel.topic('versions')
        .unique()
        .map { process, tool, version -> "${process}\t${tool}\t${version}" }
        .collectFile(name: 'versions.tsv', newLine: true, sort: true)
        .ifEmpty([])

    ch_params = channel.of(params.collect { key, value -> "${key}\t${value}" }.sort().join('\n'))
        .collectFile(name: 'params.tsv', newLine: true)

    REPORT(
        ch_metrics.collect(),
        ch_run_info.collect().ifEmpty([]),
        ch_figures.collect().ifEmpty([]),
        ch_versions,
        ch_params,
        file(params.published_metrics, checkIfExists: true),
        file(params.multiqc_config, checkIfExists: true),
        studies.join(','),
    )
}
