# cpuu-fleet: list-files
<#
.SYNOPSIS
    Lists the files of one folder that match a wildcard, with size, time and SHA-256.
.DESCRIPTION
    Used to find CPUU's result files and logs (CPUU_*) before downloading them; the SHA-256 lets
    the engine skip files it already collected. A file another process holds open exclusively is
    listed with Locked = $true and no Sha256 instead of failing the listing. Outputs nothing when
    the folder does not exist.
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

function Test-Locked {
    # ERROR_SHARING_VIOLATION (32) and ERROR_LOCK_VIOLATION (33): another process holds the file
    # without sharing read access (an AV scan, a program's exclusive log). .NET method errors
    # arrive wrapped in a MethodInvocationException, hence the walk down InnerException.
    param([System.Exception]$Exception)
    while ($null -ne $Exception) {
        if ($Exception -is [System.IO.IOException]) {
            $code = $Exception.HResult -band 0xFFFF
            if ($code -eq 32 -or $code -eq 33) {
                return $true
            }
        }
        $Exception = $Exception.InnerException
    }
    return $false
}

function Get-FileSha256 {
    # Streams the file; ReadWrite and Delete sharing let us hash a log that CPUU still holds open.
    # Returns $null when another process holds the file exclusively: it is listed as Locked.
    param([Parameter(Mandatory = $true)][string]$Path)
    try {
        $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
            [System.IO.FileAccess]::Read, ([System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete))
    }
    catch {
        if (Test-Locked -Exception $_.Exception) {
            return $null
        }
        throw
    }
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

$files = Get-ChildItem -LiteralPath $Directory -Filter $Filter -File -Force -ErrorAction Stop | Sort-Object -Property Name
foreach ($file in $files) {
    $hash = Get-FileSha256 -Path $file.FullName
    @{
        Name             = $file.Name
        FullName         = $file.FullName
        Length           = [int64]$file.Length
        LastWriteTimeUtc = $file.LastWriteTimeUtc.ToString('o')
        Sha256           = $hash
        Locked           = ($null -eq $hash)
    }
}
