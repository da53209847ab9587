# cpuu-fleet: list-files
<#
.SYNOPSIS
    Lists the files of one folder that match a wildcard, with size, time and SHA-256.
.DESCRIPTION
    Used to find CPUU's result files and logs (CPUU_*) before downloading them; the SHA-256 lets
    the engine skip files it already collected. Outputs nothing when the folder does not exist.
    Read-only.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [string]$Filter = '*'
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Get-FileSha256 {
    # Streams the file; ReadWrite sharing lets us hash a log that CPUU still holds open.
    param([Parameter(Mandatory = $true)][string]$Path)
    $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
        [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
    try {
        $sha256 = [System.Security.Cryptography.SHA256]::Create()
        try {
            $hash = $sha256.ComputeHash($stream)
        }
        finally {
            $sha256.Dispose()
        }
    }
    finally {
        $stream.Dispose()
    }
    return ([System.BitConverter]::ToString($hash) -replace '-', '').ToLowerInvariant()
}

if (-not (Test-Path -LiteralPath $Directory -PathType Container)) {
    return
}

$files = Get-ChildItem -LiteralPath $Directory -Filter $Filter -File -Force | Sort-Object -Property Name
foreach ($file in $files) {
    @{
        Name             = $file.Name
        FullName         = $file.FullName
        Length           = [int64]$file.Length
        LastWriteTimeUtc = $file.LastWriteTimeUtc.ToString('o')
        Sha256           = Get-FileSha256 -Path $file.FullName
    }
}
