# cpuu-fleet: upload
<#
.SYNOPSIS
    Writes files sent as pipeline input into a staging folder, checking each one's SHA-256.
.DESCRIPTION
    Input, for each file: a header hashtable @{Path; Length; Sha256} (Path relative to
    -Directory), then the file's content as base64 strings, any number of them (none for an empty
    file). Content is streamed to "<target>.partial", checked (length and SHA-256), then moved over
    the target, so a half-written or corrupted file never takes the place of a good one.
    Terminating errors: HashMismatch (InvalidData), DiskFull (WriteError), InvalidPath
    (InvalidArgument) for a relative path that leaves -Directory.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [Parameter(ValueFromPipeline = $true)]
    [object]$InputObject
)

begin {
    Set-StrictMode -Version 2.0
    $ErrorActionPreference = 'Stop'

    function Stop-Upload {
        param(
            [Parameter(Mandatory = $true)][string]$Message,
            [Parameter(Mandatory = $true)][string]$ErrorId,
            [Parameter(Mandatory = $true)][System.Management.Automation.ErrorCategory]$Category,
            [object]$Target
        )
        $exception = New-Object -TypeName System.InvalidOperationException -ArgumentList $Message
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, $ErrorId, $Category, $Target)
        $PSCmdlet.ThrowTerminatingError($record)
    }

    function Test-DiskFull {
        # ERROR_DISK_FULL (0x70) and ERROR_HANDLE_DISK_FULL (0x27) arrive as IOException HResults.
        param([System.Exception]$Exception)
        while ($null -ne $Exception) {
            if ($Exception -is [System.IO.IOException]) {
                $code = $Exception.HResult -band 0xFFFF
                if ($code -eq 0x70 -or $code -eq 0x27) {
                    return $true
                }
            }
            $Exception = $Exception.InnerException
        }
        return $false
    }

    function Remove-Partial {
        if ($null -ne $script:current) {
            $script:current.Stream.Dispose()
            $script:current.Hasher.Dispose()
            if (Test-Path -LiteralPath $script:current.Partial -PathType Leaf) {
                Remove-Item -LiteralPath $script:current.Partial -Force
            }
            $script:current = $null
        }
    }

    function Open-Target {
        param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Header)
        $relative = [string]$Header['Path']
        $target = $null
        try {
            if ([string]::IsNullOrWhiteSpace($relative) -or [System.IO.Path]::IsPathRooted($relative)) {
                throw 'not a relative path'
            }
            $target = [System.IO.Path]::GetFullPath([System.IO.Path]::Combine($script:root, $relative))
        }
        catch {
            $target = $null
        }
        if ($null -eq $target -or -not $target.StartsWith($script:root, [System.StringComparison]::OrdinalIgnoreCase)) {
            Stop-Upload -Message "Invalid path '$relative': it must stay inside $Directory." `
                -ErrorId 'InvalidPath' -Category InvalidArgument -Target $relative
        }
        $length = [int64]$Header['Length']
        $drive = New-Object -TypeName System.IO.DriveInfo -ArgumentList ([System.IO.Path]::GetPathRoot($target))
        if ($length -gt $drive.AvailableFreeSpace) {
            Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                -Category WriteError -Target $relative
        }
        $null = [System.IO.Directory]::CreateDirectory([System.IO.Path]::GetDirectoryName($target))
        $partial = $target + '.partial'
        $stream = [System.IO.File]::Open($partial, [System.IO.FileMode]::Create,
            [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        $script:current = @{
            Relative = $relative
            Target   = $target
            Partial  = $partial
            Length   = $length
            Sha256   = ([string]$Header['Sha256']).ToLowerInvariant()
            Stream   = $stream
            Hasher   = [System.Security.Cryptography.SHA256]::Create()
            Written  = [int64]0
        }
    }

    function Write-Chunk {
        param([Parameter(Mandatory = $true)][AllowEmptyString()][string]$Text)
        if ($null -eq $script:current) {
            Stop-Upload -Message 'File content arrived before its header.' -ErrorId 'UnexpectedInput' `
                -Category InvalidData -Target $null
        }
        $bytes = [System.Convert]::FromBase64String($Text)
        try {
            $script:current.Stream.Write($bytes, 0, $bytes.Length)
        }
        catch {
            $relative = $script:current.Relative
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $relative
            }
            Remove-Partial
            throw
        }
        $null = $script:current.Hasher.TransformBlock($bytes, 0, $bytes.Length, $null, 0)
        $script:current.Written += $bytes.Length
    }

    function Complete-Target {
        $file = $script:current
        try {
            $file.Stream.Flush()
        }
        catch {
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $file.Relative
            }
            throw
        }
        $file.Stream.Dispose()
        $null = $file.Hasher.TransformFinalBlock((New-Object -TypeName byte[] -ArgumentList 0), 0, 0)
        $actual = ([System.BitConverter]::ToString($file.Hasher.Hash) -replace '-', '').ToLowerInvariant()
        $file.Hasher.Dispose()
        if ($file.Written -ne $file.Length -or $actual -ne $file.Sha256) {
            Remove-Item -LiteralPath $file.Partial -Force
            $script:current = $null
            Stop-Upload -Message ("Hash mismatch for '{0}': received {1} bytes with SHA-256 {2}, expected {3} bytes with {4}." -f `
                    $file.Relative, $file.Written, $actual, $file.Length, $file.Sha256) `
                -ErrorId 'HashMismatch' -Category InvalidData -Target $file.Relative
        }
        # Replace keeps the target's identity (ACLs) and swaps in one step; Move for a new file.
        if ([System.IO.File]::Exists($file.Target)) {
            [System.IO.File]::Replace($file.Partial, $file.Target, [NullString]::Value)
        }
        else {
            [System.IO.File]::Move($file.Partial, $file.Target)
        }
        $script:current = $null
        @{
            Path   = $file.Relative
            Length = $file.Written
            Sha256 = $actual
        }
    }

    $null = [System.IO.Directory]::CreateDirectory($Directory)
    $script:root = [System.IO.Path]::GetFullPath($Directory).TrimEnd('\') + '\'
    $script:current = $null
}

process {
    if ($null -eq $InputObject) {
        return
    }
    try {
        if ($InputObject -is [System.Collections.IDictionary]) {
            if ($null -ne $script:current) {
                Complete-Target
            }
            Open-Target -Header $InputObject
        }
        else {
            Write-Chunk -Text ([string]$InputObject)
        }
    }
    catch {
        Remove-Partial
        throw
    }
}

end {
    if ($null -ne $script:current) {
        Complete-Target
    }
}
